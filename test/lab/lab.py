#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""dpoffload real-kernel test lab (host side, Python stdlib only).

Boots Debian 12's stock kernel (package linux-image-amd64, 6.1) under qemu with
software emulation, shares this machine's root read-only into the guest over 9p,
and runs the lab scenarios (test/lab/scenarios/*.py) or any command inside it.

  lab.py prepare                          cache the kernel and build the initramfs
  lab.py run [--build-dir DIR] SCENARIO.. boot once, run the scenarios ("all" = every one but scale)
  lab.py shell-cmd [--build-dir DIR] -- CMD...   boot once, run CMD, relay output and status
  lab.py demo [--build-dir DIR]           boot once, run test/lab/guest/demo.py

Exit status of `run`: 0 all checks passed (and at least one ran), 1 a check failed or the
guest died / timed out, 77 the lab cannot run here (no qemu, no kernel), 2 usage error.
"""

import argparse
import fcntl
import hashlib
import lzma
import os
import re
import secrets
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCENARIO_DIR = HERE / "scenarios"
GUEST_DIR = HERE / "guest"
GUEST_PYTHON = "/usr/bin/python3"
DEFAULT_CACHE = "/var/cache/dpoffload-lab"
META_PACKAGE = "linux-image-amd64"
EXIT_SKIP = 77
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"
# Bump when the initramfs layout changes in a way the hash below would not see.
INITRAMFS_FORMAT = "3"

# Loaded by the guest /init, in this order, each after its modules.dep dependencies.
# crc32c_generic goes first: libcrc32c asks the crypto API for "crc32c" when it loads.
MODULES = [
    "crc32c_generic",
    "virtio_pci", "9pnet_virtio", "9p", "overlay",
    "8021q", "veth", "vxlan", "bridge",
    "sch_ingress", "cls_flower", "cls_matchall",
    "act_gact", "act_mirred", "act_vlan", "act_pedit", "act_csum", "act_tunnel_key",
    "act_skbedit", "act_ct",
    "nf_conntrack", "nf_nat", "nf_conntrack_netlink",
]
# Load-order constraints modules.dep does not state (soft dependencies).
PRE_DEPS = {"libcrc32c": ["crc32c_generic"]}

# Busybox applets the /init needs; the chroot uses the host's own tools.
APPLETS = ["sh", "mount", "umount", "mkdir", "insmod", "chroot", "poweroff", "reboot",
           "cat", "echo", "sleep", "env", "ln", "uname", "cut", "tail", "dmesg", "sync"]

INIT_SCRIPT = r"""#!/bin/busybox sh
# dpoffload lab guest /init: load modules, mount the host root (9p, read-only),
# give it writable /tmp /var/tmp /run, chroot into it and run the host's script.
export PATH=/bin
mkdir -p /proc /sys /dev /host /rw
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "1 4 1 7" > /proc/sys/kernel/printk

RUN= TOK= KROOT=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    dpo.run=*) RUN="${arg#dpo.run=}" ;;
    dpo.tok=*) TOK="${arg#dpo.tok=}" ;;
    dpo.kroot=*) KROOT="${arg#dpo.kroot=}" ;;
  esac
done

fail() {
  echo "dpo-lab init: $*"
  echo "DPO-LAB-EXIT $TOK 125"
  poweroff -f; reboot -f; sleep 5
}

while read -r mod; do
  insmod "/lib/modules/$mod" || echo "dpo-lab init: insmod $mod failed"
done < /etc/dpo-modules

mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 host /host \
  || fail "cannot mount the host root over 9p"
mount -o bind /proc /host/proc
mount -o bind /sys /host/sys
mount -o bind /dev /host/dev
mount -t devpts -o newinstance,ptmxmode=0666 devpts /host/dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 shm /host/dev/shm 2>/dev/null
mount -t tmpfs -o mode=755 run /host/run
mkdir -p /host/run/netns /host/run/lock
mount -t tmpfs rw /rw
for d in tmp var/tmp; do
  n=$(echo "$d" | cut -c1-3)
  mkdir -p "/rw/$n/u" "/rw/$n/w"
  mount -t overlay overlay -o "lowerdir=/host/$d,upperdir=/rw/$n/u,workdir=/rw/$n/w" "/host/$d" \
    || mount -t tmpfs -o mode=1777 tmp "/host/$d" \
    || fail "cannot make /$d writable"
  chmod 1777 "/host/$d"
done

# Modules not in the initramfs load on demand from the kernel cache, through the
# host's kmod (the kernel's helper runs in this root, not in the chroot).
if [ -n "$KROOT" ] && [ -d "/host$KROOT/lib/modules" ]; then
  printf '#!/bin/busybox sh\nexec /bin/busybox chroot /host /sbin/modprobe -d %s "$@"\n' "$KROOT" > /bin/dpo-modprobe
  chmod 755 /bin/dpo-modprobe
  echo /bin/dpo-modprobe > /proc/sys/kernel/modprobe
  MPO="-d $KROOT"
fi

echo "DPO-LAB-READY $TOK $(cut -d' ' -f1 /proc/uptime)"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \
  PYTHONDONTWRITEBYTECODE=1 TERM=dumb LANG=C.UTF-8 MODPROBE_OPTIONS="$MPO" \
  DPO_LAB_GUEST=1 DPO_LAB_KROOT="$KROOT" \
  chroot /host /bin/sh "$RUN" < /dev/null
rc=$?
echo "DPO-LAB-EXIT $TOK $rc"
sync
poweroff -f
reboot -f
sleep 10
"""


class LabUnavailable(Exception):
    """The lab cannot run on this machine (no kernel, no qemu)."""


def say(msg):
    print(f"lab: {msg}", flush=True)


def cache_dir():
    return Path(os.environ.get("DPO_LAB_CACHE") or DEFAULT_CACHE)


# ---------------------------------------------------------------- kernel cache

def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _apt_kernel_package():
    """Name of the versioned kernel package linux-image-amd64 depends on, or None."""
    try:
        r = _run(["apt-cache", "depends", META_PACKAGE])
    except FileNotFoundError:
        return None
    if r.returncode != 0:
        return None
    m = re.search(r"Depends:\s*(linux-image-\d[^\s]*-amd64)\b", r.stdout)
    return m.group(1) if m else None


def _apt_update(state):
    if state.get("updated"):
        return
    state["updated"] = True
    say("apt lists missing or stale: running apt-get update")
    r = _run(["apt-get", "update"])
    if r.returncode != 0:
        say(f"apt-get update failed ({r.returncode}): {r.stderr.strip()[-500:]}")


def _kernel_complete(kdir):
    return (kdir / ".complete").exists()


def _cached_kernels(cache):
    kroot = cache / "kernel"
    if not kroot.is_dir():
        return []
    return sorted((d for d in kroot.iterdir() if d.is_dir() and _kernel_complete(d)),
                  key=lambda d: d.stat().st_mtime)


def _download_and_extract(cache, pkg, kver, state):
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        for old in debs.glob(f"{pkg}_*.deb"):
            old.unlink()
        say(f"downloading {pkg} (apt-get download)")
        r = _run(["apt-get", "download", pkg], cwd=debs)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if r.returncode == 0 and found:
            break
        if attempt == 1 and not state.get("updated"):
            _apt_update(state)
            continue
        raise LabUnavailable(f"cannot download {pkg}: {(r.stderr or r.stdout).strip()[-500:]}")
    deb = found[-1]
    kdir = cache / "kernel" / kver
    tmp = Path(tempfile.mkdtemp(prefix=f".{kver}-", dir=cache / "kernel"))
    try:
        say(f"extracting {deb.name}")
        r = _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        if r.returncode != 0:
            raise LabUnavailable(f"dpkg-deb -x {deb} failed: {r.stderr.strip()}")
        if not (tmp / "lib" / "modules" / kver).is_dir() or not (tmp / "boot" / f"vmlinuz-{kver}").is_file():
            raise LabUnavailable(f"{deb.name} has no /boot/vmlinuz-{kver} or /lib/modules/{kver}")
        say(f"depmod -b {tmp} {kver}")
        r = _run(["depmod", "-b", str(tmp), kver])
        if r.returncode != 0:
            raise LabUnavailable(f"depmod failed: {r.stderr.strip()}")
        (tmp / ".complete").write_text(f"{deb.name}\n")
        if kdir.exists():
            shutil.rmtree(kdir)
        tmp.rename(kdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    deb.unlink()  # the extracted tree is the cache; keep no second copy
    return kdir


def ensure_kernel(cache, verbose=True):
    """Return (kernel version, extracted root). Downloads only when not cached."""
    (cache / "kernel").mkdir(parents=True, exist_ok=True)
    state = {}
    pkg = _apt_kernel_package()
    if pkg is None:
        cached = _cached_kernels(cache)
        if cached:
            kdir = cached[-1]
            say(f"apt knows no {META_PACKAGE}; using the cached kernel {kdir.name}")
            return kdir.name, kdir
        _apt_update(state)
        pkg = _apt_kernel_package()
    if pkg is None:
        raise LabUnavailable(f"apt-cache cannot resolve {META_PACKAGE} "
                             "(no Debian archive reachable?) and no kernel is cached")
    kver = pkg[len("linux-image-"):]
    kdir = cache / "kernel" / kver
    if _kernel_complete(kdir):
        if verbose:
            say(f"kernel {kver}: cached in {kdir}")
        return kver, kdir
    kdir = _download_and_extract(cache, pkg, kver, state)
    say(f"kernel {kver}: downloaded and extracted into {kdir}")
    return kver, kdir


# ---------------------------------------------------------------- initramfs

def _modules_dep(moddir):
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path] = rest.split()
    return deps


def _modname(path):
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def resolve_modules(moddir, wanted=MODULES):
    """Module paths (relative to moddir) in a valid load order, dependencies first."""
    deps = _modules_dep(moddir)
    by_name = {_modname(p): p for p in deps}
    builtin = set()
    bfile = moddir / "modules.builtin"
    if bfile.exists():
        builtin = {_modname(p) for p in bfile.read_text().split()}
    order, seen = [], set()

    def visit(name, chain):
        if name in seen:
            return
        if name not in by_name:
            if name in builtin:
                seen.add(name)
                return
            raise LabUnavailable(f"module {name} not found in {moddir} (needed by {' <- '.join(chain) or 'the lab'})")
        seen.add(name)
        for pre in PRE_DEPS.get(name, []):
            visit(pre, chain + [name])
        for d in deps[by_name[name]]:
            visit(_modname(d), chain + [name])
        order.append(by_name[name])

    for m in wanted:
        visit(m.replace("-", "_"), [])
    return order


class _Cpio:
    """Minimal writer of the newc cpio format the kernel unpacks."""

    def __init__(self):
        self.parts = []
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        nameb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0))
        self.ino += 1
        blob = hdr.encode() + nameb
        blob += b"\0" * (-len(blob) % 4)
        blob += data
        blob += b"\0" * (-len(blob) % 4)
        self.parts.append(blob)

    def dir(self, name):
        self._entry(name, 0o040755)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name, major, minor):
        self._entry(name, 0o020600, rdev=(major, minor))

    def bytes(self):
        self._entry("TRAILER!!!", 0)
        out = b"".join(self.parts)
        return out + b"\0" * (-len(out) % 512)


def _read_module(path):
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        raise LabUnavailable(f"{path} is zstd-compressed; Python's stdlib cannot decompress it")
    if path.name.endswith(".gz"):
        import gzip
        return gzip.decompress(data)
    return data


def ensure_initramfs(cache, kver, kdir, verbose=True):
    moddir = kdir / "lib" / "modules" / kver
    order = resolve_modules(moddir)
    bb = Path(BUSYBOX)
    if not bb.is_file():
        raise LabUnavailable(f"{BUSYBOX} missing: apt-get install busybox-static")
    h = hashlib.sha256()
    for part in (INITRAMFS_FORMAT, kver, "\n".join(order), INIT_SCRIPT, " ".join(APPLETS)):
        h.update(part.encode() + b"\0")
    h.update(hashlib.sha256(bb.read_bytes()).digest())
    out = cache / f"initramfs-{kver}-{h.hexdigest()[:16]}.cpio"
    if out.exists():
        if verbose:
            say(f"initramfs: cached {out.name} ({len(order)} modules)")
        return out
    c = _Cpio()
    for d in ("bin", "sbin", "dev", "etc", "proc", "sys", "host", "rw", "lib", "lib/modules", "tmp"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.file("bin/busybox", bb.read_bytes(), 0o755)
    for a in APPLETS:
        c.symlink(f"bin/{a}", "busybox")
    c.file("init", INIT_SCRIPT.encode(), 0o755)
    names = []
    for rel in order:
        flat = _modname(rel) + ".ko"
        c.file(f"lib/modules/{flat}", _read_module(moddir / rel))
        names.append(flat)
    c.file("etc/dpo-modules", ("\n".join(names) + "\n").encode())
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(c.bytes())
    tmp.rename(out)
    for old in cache.glob("initramfs-*.cpio"):
        if old != out:
            old.unlink()
    say(f"initramfs: built {out.name} ({len(order)} modules: {' '.join(_modname(p) for p in order)})")
    return out


def prepare(cache=None, verbose=True):
    """Ensure kernel and initramfs are cached. Returns (kver, kernel dir, vmlinuz, initramfs).

    Downloads and builds are always reported; cache hits only when `verbose`."""
    cache = cache or cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LabUnavailable(f"cannot create the cache dir {cache}: {e}")
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kver, kdir = ensure_kernel(cache, verbose)
        initrd = ensure_initramfs(cache, kver, kdir, verbose)
    return kver, kdir, kdir / "boot" / f"vmlinuz-{kver}", initrd


# ---------------------------------------------------------------- booting

HIDDEN_IN_GUEST = ("/run", "/var/run", "/proc", "/sys", "/dev")


def _guest_visible(path):
    p = str(Path(path).resolve())
    return not any(p == h or p.startswith(h + "/") for h in HIDDEN_IN_GUEST)


def _workdir(build_dir):
    """A host directory the guest sees at the same path, for the script it runs."""
    candidates = []
    if build_dir and Path(build_dir).is_dir():
        candidates.append(Path(build_dir) / "lab")
    candidates.append(cache_dir() / "runs")
    for base in candidates:
        if not _guest_visible(base) or " " in str(base.resolve()):
            continue  # hidden in the guest, or unfit for the kernel command line
        try:
            base.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="run-", dir=base))
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix="dpo-lab-"))


def _console_log(build_dir, name):
    """Where a boot's console is kept: <build-dir>/lab/NAME, else the cache's."""
    for base in ([Path(build_dir) / "lab"] if build_dir else []) + [cache_dir()]:
        if base.is_dir() and os.access(base, os.W_OK):
            return base / name
    return None


def find_qemu():
    q = shutil.which(QEMU)
    if not q:
        raise LabUnavailable(f"{QEMU} not found (apt-get install qemu-system-x86)")
    return q


class BootResult:
    def __init__(self):
        self.status = None      # exit status of the guest command, None if unknown
        self.error = None       # "timed out ..." / "guest died ..."
        self.boot_s = None      # host seconds from qemu start to guest ready
        self.guest_uptime = None
        self.total_s = None
        self.console = []       # every console line
        self.relayed = []       # lines of the guest command


def boot_and_run(prepared, command_script, timeout, console_log=None, on_line=None):
    """Boot one guest that runs `command_script` (a host path, seen at the same path).

    `prepared` is what prepare() returned; `on_line` is called with each line the
    command prints, as it arrives."""
    qemu = find_qemu()
    kver, kdir, vmlinuz, initrd = prepared
    tok = secrets.token_hex(6)
    bios = []
    for d in ("/usr/share/qemu", "/usr/share/seabios"):
        if Path(d, "qboot.rom").exists():
            bios = ["-bios", "qboot.rom"]
            break
    append = (f"console=ttyS0 quiet loglevel=3 panic=-1 random.trust_cpu=on mitigations=off "
              f"dpo.run={command_script} dpo.tok={tok}")
    if " " not in str(kdir):
        append += f" dpo.kroot={kdir}"
    cmd = [qemu, "-accel", "tcg,thread=multi", "-cpu", "max", *bios, "-m", "2048", "-smp", "2",
           "-nographic", "-no-reboot", "-nic", "none", "-vga", "none",
           "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", append,
           "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap"]
    res = BootResult()
    t0 = time.monotonic()
    deadline = t0 + timeout
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    logf = open(console_log, "w") if console_log else None
    buf = b""
    ready = False
    ready_re = re.compile(rf"DPO-LAB-READY {tok} (\S+)")
    exit_re = re.compile(rf"DPO-LAB-EXIT {tok} (\d+)")

    def handle(line):
        nonlocal ready
        res.console.append(line)
        if logf:
            logf.write(line + "\n")
            logf.flush()
        m = exit_re.search(line)
        if m:
            res.status = int(m.group(1))
            return
        if not ready:
            m = ready_re.search(line)
            if m:
                ready = True
                res.boot_s = time.monotonic() - t0
                res.guest_uptime = float(m.group(1))
            return
        if res.status is None:
            res.relayed.append(line)
            if on_line:
                on_line(line)

    try:
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                res.error = f"timed out after {timeout:.0f} s"
                break
            r, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                handle(raw.decode("utf-8", "replace").replace("\r", ""))
        if buf:
            handle(buf.decode("utf-8", "replace").replace("\r", ""))
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=10 if res.status is not None and not res.error else 0.1)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if logf:
            logf.close()
    res.total_s = time.monotonic() - t0
    if res.error is None and res.status is None:
        res.error = ("guest died before its command ended" if ready else
                     "guest died before it was ready") + f" (qemu exit {proc.returncode})"
    return res


def _print_tail(res, console_log, n=40):
    """Show the console's tail, unless it was relayed already (the guest got ready)."""
    where = f" (full log: {console_log})" if console_log else ""
    if res.boot_s is not None:
        say(f"the guest's console output is above{where}")
        return
    print(f"---- last {n} console lines{where}", flush=True)
    for line in res.console[-n:]:
        print(f"| {line}")
    print("----", flush=True)


# ---------------------------------------------------------------- commands

# Scenarios that get a boot of their own (their meson test), outside "all": the scale
# scenario fills the kernel with 100k rules and tears them down, which would slow the
# timed checks of whatever ran after it.
SEPARATE = {"scale"}


def available_scenarios():
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.py") if not p.name.startswith("_"))


def _write_script(workdir, body):
    script = workdir / "guest.sh"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return script


def cmd_prepare(args):
    try:
        kver, kdir, vmlinuz, initrd = prepare()
    except LabUnavailable as e:
        print(f"lab: cannot prepare the lab: {e}", file=sys.stderr)
        return 1
    say(f"ready: kernel {vmlinuz}, initramfs {initrd}")
    return 0


def _boot_preflight():
    """prepare() for a boot, or None (after saying why) when the lab cannot run here."""
    try:
        find_qemu()
        return prepare(verbose=False)
    except LabUnavailable as e:
        print(f"lab: SKIP: the lab cannot run here: {e}", flush=True)
        return None


def cmd_run(args):
    names = []
    known = available_scenarios()
    for s in args.scenarios:
        if s == "all":
            names.extend(n for n in known if n not in names and n not in SEPARATE)
        elif s in known:
            if s not in names:
                names.append(s)
        else:
            print(f"lab: unknown scenario {s!r}; known: {', '.join(known) or 'none'}", file=sys.stderr)
            return 2
    if not names:
        print("lab: no scenario to run", file=sys.stderr)
        return 2
    prepared = _boot_preflight()
    if not prepared:
        return EXIT_SKIP
    workdir = _workdir(args.build_dir)
    console_log = _console_log(args.build_dir, "console.log")
    argv = [GUEST_PYTHON, "-u", str(GUEST_DIR / "run_scenarios.py"), "--source-root", str(REPO)]
    if args.build_dir:
        argv += ["--build-dir", str(Path(args.build_dir).resolve())]
    argv += ["--"] + names
    script = _write_script(workdir, f"cd {shlex.quote(str(REPO))} || exit 125\nexec {shlex.join(argv)}")
    counts = {"PASS": 0, "FAIL": 0}
    line_re = re.compile(r"^(PASS|FAIL) \S+: ")

    def on_line(line):
        m = line_re.match(line)
        if m:
            counts[m.group(1)] += 1
        print(line, flush=True)

    say(f"booting the lab kernel to run: {' '.join(names)} (timeout {args.timeout:.0f} s)")
    try:
        res = boot_and_run(prepared, script, args.timeout, console_log=console_log, on_line=on_line)
    except LabUnavailable as e:
        print(f"lab: SKIP: the lab cannot run here: {e}", flush=True)
        return EXIT_SKIP
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = res.error is None and res.status == 0 and counts["FAIL"] == 0 and counts["PASS"] > 0
    if res.error:
        say(f"ERROR: {res.error}")
        _print_tail(res, console_log)
    elif res.status != 0:
        say(f"guest runner exited with status {res.status}")
        if counts["FAIL"] == 0:
            _print_tail(res, console_log)
    elif counts["PASS"] == 0:
        say("no check ran")
    boot = f"{res.boot_s:.1f} s (guest uptime {res.guest_uptime:.1f} s)" if res.boot_s else "n/a"
    say(f"boot to guest shell {boot}, total {res.total_s:.1f} s; console log: {console_log}")
    failed = counts["FAIL"] + (0 if ok or counts["FAIL"] else 1)
    print(f"{counts['PASS']} passed, {failed} failed", flush=True)
    return 0 if ok else 1


def _shell(argv, build_dir, timeout, cwd):
    prepared = _boot_preflight()
    if not prepared:
        return EXIT_SKIP
    workdir = _workdir(build_dir)
    console_log = _console_log(build_dir, "shell-console.log")
    script = _write_script(workdir, f"cd {shlex.quote(str(cwd))} || exit 125\n{shlex.join(argv)}")
    try:
        res = boot_and_run(prepared, script, timeout, console_log=console_log,
                           on_line=lambda line: print(line, flush=True))
    except LabUnavailable as e:
        print(f"lab: SKIP: the lab cannot run here: {e}", flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
        return EXIT_SKIP
    if res.error:
        say(f"ERROR: {res.error}")
        _print_tail(res, console_log)
        shutil.rmtree(workdir, ignore_errors=True)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"lab: guest booted in {res.boot_s:.1f} s, command exited {res.status}, "
          f"total {res.total_s:.1f} s", file=sys.stderr, flush=True)
    return res.status


def cmd_shell(args):
    argv = args.cmd
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("lab: shell-cmd needs a command after --", file=sys.stderr)
        return 2
    cwd = Path(args.cwd or os.getcwd()).resolve()
    return _shell(argv, args.build_dir, args.timeout, cwd)


def cmd_demo(args):
    build = Path(args.build_dir or REPO / "build").resolve()
    say("booting Debian 12's kernel under qemu (software emulation; about 15-30 s) for the demo")
    argv = [GUEST_PYTHON, "-u", str(GUEST_DIR / "demo.py"),
            "--source-root", str(REPO), "--build-dir", str(build)]
    return _shell(argv, build, args.timeout, REPO)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("prepare", help="cache the lab kernel and build its initramfs")
    p = sub.add_parser("run", help="boot one guest and run scenarios ('all' for every one)")
    p.add_argument("--build-dir", help="meson build dir (scenarios find the daemon there)")
    p.add_argument("--timeout", type=float, default=600, help="hard overall timeout, seconds")
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    p = sub.add_parser("shell-cmd", help="boot one guest, run CMD, relay output and exit status")
    p.add_argument("--build-dir")
    p.add_argument("--cwd", help="directory to run CMD in (default: the current one)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("demo", help="boot one guest and run test/lab/guest/demo.py")
    p.add_argument("--build-dir", help="meson build dir holding agent/dpoffloadd (default: <repo>/build)")
    p.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    return {"prepare": cmd_prepare, "run": cmd_run, "shell-cmd": cmd_shell, "demo": cmd_demo}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
