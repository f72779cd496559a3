"""The names prefloop's jobs and locks go by, in one module that imports nothing from bot.

A queued job's row keeps its task and queue name, and may wait in the database across an
upgrade: these strings must not change. A feature defers another feature's job (the
service queues a generation, the reaper a retrain) by these names, without importing the
code that runs it.
"""

# procrastinate tasks (the name is what a job row stores) and their queues.
GENERATE_TASK = "prefloop.generate"
GENERATE_QUEUE = "generate"
EXPORT_TASK = "prefloop.export"
RETRAIN_TASK = "prefloop.retrain"
SCHEDULE_TASK = "prefloop.retrain-schedule"  # the schedule trigger of the retrain loop
CHECK_TASK = "prefloop.retrain-new-picks"  # the new-picks trigger of the retrain loop
AGREEMENT_TASK = "prefloop.retrain-agreement"  # the live-agreement trigger of the retrain loop
SWEEP_TASK = "prefloop.store-sweep"
MAINTENANCE_QUEUE = "maintenance"  # exports, the retrain loop and the store sweep

# procrastinate periodic task ids (stored with each deferred run: a schedule keeps its id).
SCHEDULE_PERIODIC = "retrain-schedule"
CHECK_PERIODIC = "retrain-new-picks"
AGREEMENT_PERIODIC = "retrain-agreement"
SWEEP_PERIODIC = "store-sweep"

# procrastinate job locks: one job holding a lock runs at a time.
EXPORT_LOCK = "prefloop-export"
RETRAIN_LOCK = "prefloop-retrain"

# The PostgreSQL advisory lock a training stage holds while generations wait (one GPU).
GPU_LOCK = 0x70726566_6C6F6F70 & 0x7FFFFFFFFFFFFFFF  # "prefloop"

# Keys of a job's additional context, set by the worker that runs it.
RUNNER = "runner"  # the GenerationRunner of a generation worker
PLATFORM = "platform"  # the Platform of the maintenance worker
