"""The program every sandbox starts: it limits itself, then runs one piece of untrusted code.

This file is never imported by agentgym: its text is handed to ``python -I -S -c`` inside the sandbox
(bwrap, docker or a plain subprocess), so it may use only the standard library and must work on any
Python >= 3.8. Arguments, all integers (-1 = leave alone):

    uid gid address_space_bytes processes file_size_bytes open_files cpu_seconds

Protocol. With ``AGENTGYM_CODE`` in the environment (docker) the job comes from there (base64 of the
code, ``AGENTGYM_STDIN`` base64 of its stdin). Otherwise the runner writes one byte ``R`` to stdout once
the interpreter is up and limited, then reads a 16-digit decimal length and that many bytes of UTF-8
code from stdin; whatever stdin holds after that is the program's own stdin. Pre-started workers
(see ``pool.py``) wait at that read, so the interpreter's start-up is paid before the job arrives.

The code runs as ``__main__`` from ``main.py`` in the working directory (the sandbox's private
scratch directory), as ``python main.py`` would run it: same tracebacks, ``sys.exit`` codes and
``if __name__ == "__main__"`` behaviour.
"""

import os
import resource
import sys


def _limit(which, value):
    if value >= 0:
        resource.setrlimit(which, (value, value))


def _read_exactly(fd, size):
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise SystemExit(0)  # the host went away before sending a job
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive_job():
    encoded = os.environ.pop("AGENTGYM_CODE", None)
    if encoded is not None:
        import binascii

        stdin = binascii.a2b_base64(os.environ.pop("AGENTGYM_STDIN", ""))
        with open(".stdin", "wb") as handle:
            handle.write(stdin)
        fd = os.open(".stdin", os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
        os.unlink(".stdin")
        return binascii.a2b_base64(encoded)
    os.write(1, b"R")
    return _read_exactly(0, int(_read_exactly(0, 16)))


def main(argv):
    uid, gid, address_space, processes, file_size, open_files, cpu_seconds = (int(a) for a in argv)
    if uid >= 0:
        # Started as root without a user namespace (bwrap run by root): become a user of our own,
        # so RLIMIT_NPROC counts (it is never enforced for root) and no file of the host is ours.
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_AS, address_space)
    _limit(resource.RLIMIT_NPROC, processes)
    _limit(resource.RLIMIT_FSIZE, file_size)
    _limit(resource.RLIMIT_NOFILE, open_files)

    code = _receive_job().decode("utf-8", "replace")

    if cpu_seconds >= 0:
        # The CPU limit counts from now: the interpreter's own start-up is not the program's time.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime) + 1 + cpu_seconds
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))  # SIGXCPU, then SIGKILL a second later

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
    except SystemExit:
        raise
    except BaseException as error:  # print it as the interpreter would, without this runner's frame
        traceback = error.__traceback__.tb_next if error.__traceback__ is not None else None
        sys.excepthook(type(error), error.with_traceback(traceback), traceback)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
