"""A throwaway single-node Slurm cluster for tests: `temporary_slurm(base_dir)` yields its
``slurm.conf`` path (set SLURM_CONF to it for sbatch, squeue, scontrol and submitit).

Debian's ``slurm-wlm`` and ``munge`` provide the daemons. Everything lives under ``base_dir``:
a munge key and socket of its own (a system munged, if any, is left alone), slurmctld's state,
slurmd's spool, the logs. Both daemons listen on free localhost ports; the one node is this
host with every usable core; no accounting database (``sacct`` is not available: job states
come from ``squeue`` and the run directories). On exit every job is cancelled and the daemons
are stopped. As root, jobs run as root (CI); otherwise as the calling user.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")
START_TIMEOUT_S = 60


class SlurmUnavailable(RuntimeError):
    """Slurm's or munge's programs are not installed here: the tests cannot run."""


class SlurmStartError(RuntimeError):
    """The programs exist but the cluster did not come up; the message ends with its logs."""


def _program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise SlurmUnavailable(f"{name} not found (Debian: apt-get install slurm-wlm munge)")
    return found


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _config(base: Path, ports: list[int], munge_socket: Path) -> str:
    user = getpass.getuser()
    host = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0))
    return f"""\
ClusterName=fambench-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=30
MinJobAge=300
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


def _logs(base: Path) -> str:
    parts = []
    for name in ("munged.log", "slurmctld.log", "slurmd.log"):
        path = base / name
        if path.is_file():
            parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-20:]))
    return "\n".join(parts)


def _wait_until_idle(env: dict[str, str], base: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["sinfo", "--noheader", "--format=%t"], env=env, capture_output=True, text=True
        )
        if done.returncode == 0 and done.stdout.strip() in ("idle", "mix", "alloc"):
            return
        time.sleep(0.5)
    raise SlurmStartError(f"the node did not become idle in {START_TIMEOUT_S} s\n{_logs(base)}")


def _stop(pid_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)


@contextlib.contextmanager
def temporary_slurm(base_dir: Path) -> Iterator[Path]:
    """Start munged, slurmctld and slurmd under ``base_dir``; yield the slurm.conf path."""
    for name in DAEMONS:
        _program(name)
    base = Path(base_dir).resolve()
    for sub in ("state", "spool", "munge"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(base / "munge", 0o700)
    key, munge_socket = base / "munge" / "munge.key", base / "munge" / "socket"
    subprocess.run([_program("mungekey"), "--create", f"--keyfile={key}"], check=True)
    munged = [
        _program("munged"),
        f"--socket={munge_socket}",
        f"--key-file={key}",
        f"--pid-file={base}/munged.pid",
        f"--log-file={base}/munged.log",
        f"--seed-file={base}/munge/seed",
        "--force",  # the test's own directories, not a system install's permissions
    ]
    conf = base / "slurm.conf"
    conf.write_text(_config(base, _free_ports(2), munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        subprocess.run(munged, check=True, capture_output=True, text=True)
        subprocess.run([_program("slurmctld"), "-i"], env=env, check=True)
        subprocess.run([_program("slurmd")], env=env, check=True)
        _wait_until_idle(env, base)
        yield conf
    except subprocess.CalledProcessError as exc:
        raise SlurmStartError(f"{exc.cmd[0]} failed: {exc.stderr or ''}\n{_logs(base)}") from None
    finally:
        subprocess.run(["scancel", "--full", "--user", getpass.getuser()], env=env,
                       capture_output=True)  # fmt: skip
        time.sleep(1)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            _stop(base / pid_file)
