"""The ``ray`` executor: jobs run as tasks on a Ray cluster; the server is a stateless front door.

CreateJob writes the record, then hands the job to Ray (:mod:`.executor`) through a driver process of
its own (:mod:`.bridge`, :mod:`.driver`): one named, detached actor per job (:mod:`.actor`), created
idempotently by job id and placed by Ray on a node with the resources the spec needs
(:mod:`.resources`). The actor runs the job as a ``local`` server would (:mod:`.task`): inputs staged
from storage, the same sandboxed worker process, checkpoints to storage, the same manifest publish.

Ray owns placement, restarts of a lost actor (which resumes from the job's checkpoints), cancellation
(CancelJob kills the actor) and node loss; so this path has no lease renewal, no fencing of workers, no
takeover by compare-and-swap, no dispatcher queue and no release of jobs at shutdown. The front doors
keep one scan of the index of active jobs (the :class:`~..execution.sweeper.Sweeper`): a job whose
record was written but never handed to Ray (its front door died in between) is handed on again, which
the actor's name makes idempotent, and ended jobs are cleaned up.
"""
