"""Long-running VMA services: the job store, the progress store and the job runner."""
