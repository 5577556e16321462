"""How this process was launched: by mpiexec / srun or alone, read from the environment.

Nothing here imports mpi4py, so the CPU backend can ask how many ranks share
this machine (to give each cores / ranks threads) before MPI is started, and a
process started without a launcher never loads MPI at all.

Launchers and the variables they set (rank, world size, ranks on this node):

    MPICH / Intel MPI (hydra)   PMI_RANK, PMI_SIZE, MPI_LOCALNRANKS
    Open MPI                    OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_SIZE
    Slurm srun                  SLURM_PROCID, SLURM_NTASKS, SLURM_NTASKS_PER_NODE / SLURM_TASKS_PER_NODE
    PMIx                        PMIX_RANK, (size from MPI itself)
"""

from __future__ import annotations

import os

_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


def _int_var(names: tuple[str, ...]) -> tuple[str, int] | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return name, int(value)
    return None


def launcher_variable() -> str | None:
    """The name of the variable that shows a launch by mpiexec / srun (None: started alone).

    srun alone (``SLURM_PROCID`` set inside any Slurm job, even a one-task batch
    script) counts only with more than one task, so ``sbatch script.sh`` running
    ``python train.py`` stays a single process.
    """
    for name in _RANK_VARS:
        if name in os.environ and name != "SLURM_PROCID":
            return name
    tasks = _int_var(("SLURM_NTASKS",))
    if "SLURM_PROCID" in os.environ and "SLURM_STEP_ID" in os.environ and tasks and tasks[1] > 1:
        return "SLURM_PROCID"
    return None


def launched() -> bool:
    """True when a launcher started this process as one rank of an MPI job."""
    return launcher_variable() is not None


def env_world_size() -> int:
    """The world size the launcher announced (1 when started alone)."""
    if not launched():
        return 1
    found = _int_var(_SIZE_VARS)
    return found[1] if found else 1


def env_rank() -> int:
    """This process's rank as the launcher announced it (0 when started alone)."""
    if not launched():
        return 0
    found = _int_var(_RANK_VARS)
    return found[1] if found else 0


def local_ranks() -> int:
    """How many ranks of this job run on this machine (1 when started alone).

    Slurm writes SLURM_TASKS_PER_NODE as e.g. ``4(x2),3``; the first count is taken.
    """
    if not launched():
        return 1
    found = _int_var(_LOCAL_SIZE_VARS)
    if found:
        return max(1, found[1])
    per_node = os.environ.get("SLURM_TASKS_PER_NODE", "").split("(")[0].split(",")[0]
    return max(1, int(per_node)) if per_node.isdigit() else 1
