"""The program every sandbox starts: it limits itself, then runs untrusted code.

This file is never imported by agentgym: its text is handed to ``python -I -S -c`` inside the sandbox
(bwrap, docker or a plain subprocess), so it may use only the standard library and must work on any
Python >= 3.9. It has two modes.

**Worker** (docker, subprocess, and bwrap without its fork server): one process, one job. Arguments,
all integers (-1 = leave alone):

    uid gid address_space_bytes processes file_size_bytes open_files cpu_seconds

The runner writes one byte ``R`` to stdout once the interpreter is up and limited, then reads a
16-digit decimal length and that many bytes of UTF-8 code from stdin; whatever stdin holds after that is
the program's own stdin. Pre-started workers (see ``pool.py``) wait at that read, so the interpreter's
start-up is paid before the job arrives.

**Fork server** (bwrap's default; arguments ``forkserver CONTROL_FD PRIVILEGED SECCOMP_HEX``): a booted
interpreter that never runs untrusted code itself. For each job the host sends it one end of a fresh
socket pair (SCM_RIGHTS over the control socket, see ``forkserver.py``) and it forks:

    fork server -> supervisor: new mount, PID, IPC, network and UTS namespaces (unshare)
                -> init, PID 1 there: reads the job, mounts a fresh /tmp, /dev/shm and /proc, brings
                   up loopback, runs the program, feeds its stdin, captures its (capped) output, enforces
                   the deadline, kills everything left in the namespace and sends back the result
                -> program, PID 2: its own session; a random unused uid (run by root) or no capability
                   at all; empty bounding set; rlimits; no new privileges; the seccomp filter; then the code

A job is one line of integers ``address_space processes file_size open_files cpu_seconds scratch_bytes
shm_bytes timeout_ms max_output code_len stdin_len`` followed by the code and the stdin; the reply is
``exit_code timed_out truncated duration_ns out_len err_len`` and the two outputs, or ``E message``.
Each program is a fresh fork of a process that has run nothing but this file, with the modules this
file imported taken out of ``sys.modules``: no file, process, module or variable of one job reaches
the next (what jobs do share is this interpreter's hash seed).

In both modes the code runs as ``__main__`` from ``main.py`` in the working directory (the sandbox's
private scratch directory), as ``python main.py`` would run it: same tracebacks, ``sys.exit`` codes and
``if __name__ == "__main__"`` behaviour.
"""

import sys

_BOOT_MODULES = set(sys.modules)  # what a fresh `python -I -S` has; the fork server's own are removed

import os  # noqa: E402
import resource  # noqa: E402


def _limit(which, value):
    if value >= 0:
        resource.setrlimit(which, (value, value))


def set_limits(address_space, processes, file_size, open_files):
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_AS, address_space)
    _limit(resource.RLIMIT_NPROC, processes)
    _limit(resource.RLIMIT_FSIZE, file_size)
    _limit(resource.RLIMIT_NOFILE, open_files)


def _read_exactly(fd, size):
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise SystemExit(0)  # the host went away before sending a job
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def run_as_main(code):
    """Run ``code`` as the ``__main__`` module from ``./main.py``; returns the exit status."""
    path = os.path.join(os.getcwd(), "main.py")
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(code)  # so tracebacks can show the source lines
    except OSError:
        path = "<string>"
    module = type(sys)("__main__")
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    sys.argv = [path]
    sys.path.insert(0, os.path.dirname(path) if path != "<string>" else "")
    sys.stdout.reconfigure(line_buffering=True)  # output printed before a timeout is not lost
    try:
        exec(compile(code, path, "exec"), module.__dict__)
    except SystemExit as stop:
        return _exit_status(stop.code)
    except BaseException as error:  # print it as the interpreter would, without this runner's frame
        traceback = error.__traceback__.tb_next if error.__traceback__ is not None else None
        sys.excepthook(type(error), error.with_traceback(traceback), traceback)
        return 1
    return 0


def _exit_status(code):
    """The process exit status for ``sys.exit(code)``, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


# ---------------------------------------------------------------------------------------------- worker


def _receive_job():
    os.write(1, b"R")
    return _read_exactly(0, int(_read_exactly(0, 16)))


def worker(argv):
    uid, gid, address_space, processes, file_size, open_files, cpu_seconds = (int(a) for a in argv)
    if uid >= 0:
        # Started as root without a user namespace (bwrap run by root): become a user of our own,
        # so RLIMIT_NPROC counts (it is never enforced for root) and no file of the host is ours.
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    set_limits(address_space, processes, file_size, open_files)

    code = _receive_job().decode("utf-8", "replace")

    if cpu_seconds >= 0:
        # The CPU limit counts from now: the interpreter's own start-up is not the program's time.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime) + 1 + cpu_seconds
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))  # SIGXCPU, then SIGKILL a second later
    sys.exit(run_as_main(code))


# ----------------------------------------------------------------------------------------- fork server

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000,
    0x04000000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 1 << 14, 1 << 18
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS = 4, 24, 28, 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
# SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE, each with its lock bit:
# root (a uid-0 program in a user namespace) never regains capabilities, by exec or otherwise.
SECUREBITS_LOCKED_DOWN = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40


def serve(control_fd, privileged, seccomp_program):
    """The fork server's loop: one forked supervisor per socket the host sends, until the host leaves."""
    # Everything a job needs is imported now, once, so a job's forks find it loaded.
    import atexit  # noqa: F401
    import ctypes
    import fcntl  # noqa: F401
    import gc
    import select  # noqa: F401
    import signal
    import socket
    import struct  # noqa: F401
    import time  # noqa: F401

    libc = ctypes.CDLL(None, use_errno=True)
    # Warm up the compiler once here, and move every object so far out of the collector's sight:
    # each job's fork then shares these pages instead of copying them on its first collection.
    compile("pass", "<warm-up>", "exec")
    gc.freeze()
    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    control.sendall(b"R")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1, 4)
        except InterruptedError:
            continue
        if not message:  # the host closed its end (or died): every job goes, then the server
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os._exit(0)
        for fd in fds:
            if os.fork() == 0:
                try:
                    control.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    _supervise(libc, fd, privileged, seccomp_program)
                finally:
                    os._exit(70)
            os.close(fd)


def _check(result, what):
    if result != 0:
        import ctypes

        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _supervise(libc, conn, privileged, seccomp_program):
    """New namespaces for one job, and its init (PID 1 there) forked into them."""
    import ctypes

    try:
        namespaces = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWUTS
        if privileged:
            _check(libc.unshare(namespaces), "unshare")
        else:
            # Not run by root, the server is root of a user namespace, where every job would be the
            # same user, sharing one RLIMIT_NPROC count. A user namespace per job, in which the job is
            # user 65534 (mapped onto the server's user), gives each job its own.
            _check(libc.unshare(namespaces | CLONE_NEWUSER), "unshare")
            for name, content in (("setgroups", "deny"), ("uid_map", "65534 0 1"), ("gid_map", "65534 0 1")):
                with open("/proc/self/" + name, "w") as handle:
                    handle.write(content)
        _check(
            libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None), "making mounts private"
        )
    except OSError as error:
        _reply_error(conn, error)
        os._exit(1)
    pid = os.fork()
    if pid == 0:
        try:
            _init(libc, conn, privileged, seccomp_program)
        except BaseException as error:  # anything here is the sandbox's fault, not the program's
            _reply_error(conn, error)
        os._exit(0)
    os.close(conn)
    os.waitpid(pid, 0)
    os._exit(0)


def _reply_error(conn, error):
    try:
        os.write(conn, b"E " + repr(error).encode("utf-8", "replace")[:4000] + b"\n")
    except OSError:
        pass


def _read_line(fd):
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            raise EOFError("the host closed the job's socket")
        line += byte
    return line


def _init(libc, conn, privileged, seccomp_program):
    import ctypes
    import select
    import signal
    import time

    # PID 1 ignores every signal it has no handler for; Python's SIGINT handler would let a job's
    # program (the same user in a user namespace) interrupt its init.
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    header = [int(v) for v in _read_line(conn).split()]
    (
        address_space,
        processes,
        file_size,
        open_files,
        cpu_seconds,
        scratch_bytes,
        shm_bytes,
        timeout_ms,
        max_output,
        code_len,
        stdin_len,
    ) = header
    code = _read_exactly(conn, code_len)
    stdin = _read_exactly(conn, stdin_len)

    flags = ctypes.c_ulong(MS_NOSUID | MS_NODEV)
    _check(
        libc.mount(b"tmpfs", b"/tmp", b"tmpfs", flags, b"mode=1777,size=%d" % scratch_bytes), "mounting /tmp"
    )
    _check(
        libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", flags, b"mode=1777,size=%d" % shm_bytes),
        "mounting /dev/shm",
    )
    _check(
        libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC), None),
        "mounting /proc",
    )
    _loopback_up()

    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(conn)
            for fd in (stdin_w, out_r, err_r):
                os.close(fd)
            _become_program(
                libc,
                privileged,
                seccomp_program,
                (stdin_r, out_w, err_w),
                (address_space, processes, file_size, open_files, cpu_seconds),
            )
            status = run_as_main(code.decode("utf-8", "replace"))
            _finish(status)
        finally:
            os._exit(70)
    for fd in (stdin_r, out_w, err_w):
        os.close(fd)

    deadline = start + timeout_ms / 1000
    outputs = {out_r: bytearray(), err_r: bytearray()}
    exited = os.pidfd_open(pid)  # readable once the program has ended
    reading = {out_r, err_r}
    timed_out = truncated = False
    exit_status = None
    written = 0
    if stdin:
        os.set_blocking(stdin_w, False)
        writing = [stdin_w]
    else:
        os.close(stdin_w)
        writing = []
    while exit_status is None or reading:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        watched = [conn, *reading] + ([exited] if exit_status is None else [])
        readable, writable, _ = select.select(watched, writing, [], left)
        if conn in readable:  # the host gave up on this job
            timed_out = True
            break
        if exited in readable and exit_status is None:
            exit_status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            _kill_the_rest()  # the program is done: whatever it left running goes now, and its pipes close
            if writing:
                os.close(stdin_w)
                writing = []
        for fd in readable:
            if fd not in reading:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                reading.discard(fd)
                continue
            buffer = outputs[fd]
            buffer += chunk
            if len(buffer) > max_output:
                del buffer[max_output:]
                truncated = True
        if truncated:
            break
        if writable and writing:
            try:
                written += os.write(stdin_w, stdin[written : written + 65536])
            except OSError:  # the program closed its stdin
                written = len(stdin)
            if written >= len(stdin):
                os.close(stdin_w)
                writing = []
    _kill_the_rest()
    if exit_status is None:
        exit_status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    duration_ns = int((time.monotonic() - start) * 1e9)
    out, err = bytes(outputs[out_r]), bytes(outputs[err_r])
    reply = b"%d %d %d %d %d %d\n" % (exit_status, timed_out, truncated, duration_ns, len(out), len(err))
    _write_all(conn, reply + out + err)


def _kill_the_rest():
    """SIGKILL every process in this PID namespace but its init (the caller)."""
    try:
        os.kill(-1, 9)
    except ProcessLookupError:
        pass  # there was none


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _loopback_up():
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        fcntl.ioctl(
            probe.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
        )


def _become_program(libc, privileged, seccomp_program, stdio, limits):
    """Turn this fresh fork of init into the untrusted program's process, taking away all it may not keep."""
    import ctypes
    import signal

    address_space, processes, file_size, open_files, cpu_seconds = limits
    signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, as in any Python
    os.setsid()  # no controlling terminal to inject into
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    os.closerange(3, 1 << 16)
    ulong = ctypes.c_ulong

    def prctl(option, value, what):
        _check(libc.prctl(option, ulong(value), ulong(0), ulong(0), ulong(0)), what)

    for capability in range(64):  # empty the bounding set (past the last capability: EINVAL, ignored)
        libc.prctl(PR_CAPBSET_DROP, ulong(capability), ulong(0), ulong(0), ulong(0))
    prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED_DOWN, "locking securebits")
    if privileged:
        # Started as host root: become a user no account has, so RLIMIT_NPROC counts, no host file is
        # ours, and no other job (each has its own uid) can be signalled. setresuid empties the
        # capability sets.
        uid = 100_000 + int.from_bytes(os.urandom(4), "little") % (2**31 - 200_000)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        # Changing uid made the process undumpable, which hands its /proc/self files to root; a fresh
        # `python` run by that user would own them (it may rename itself, read its own status, ...).
        prctl(PR_SET_DUMPABLE, 1, "setting dumpable")
    # (Not run by root, the job is already user 65534 of its own user namespace, see _supervise.)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _check(libc.capset(header, (ctypes.c_uint32 * 6)()), "dropping capabilities")

    set_limits(address_space, processes, file_size, open_files)
    if cpu_seconds >= 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))  # SIGXCPU, then SIGKILL

    prctl(PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")
    if seccomp_program:

        class Program(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

        program = Program(len(seccomp_program) // 8, seccomp_program)
        _check(
            libc.prctl(PR_SET_SECCOMP, ulong(SECCOMP_MODE_FILTER), ctypes.byref(program), ulong(0), ulong(0)),
            "loading the seccomp filter",
        )
    os.chdir("/tmp")
    for name in list(sys.modules):
        if name not in _BOOT_MODULES:
            del sys.modules[name]


def _finish(status):
    """End the program as the interpreter would: join its threads, run atexit, flush, exit."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except Exception:
            pass
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


if __name__ == "__main__":
    if sys.argv[1] == "forkserver":
        serve(int(sys.argv[2]), sys.argv[3] == "1", bytes.fromhex(sys.argv[4]))
    else:
        worker(sys.argv[1:])
