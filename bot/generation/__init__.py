"""Generation: a worker (worker.py) runs the generate task (tasks.py) with one pipeline,
and each job claims its row, makes the images, stores and records them (runner.py)."""
