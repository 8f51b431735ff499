"""Job runner (placeholder)."""


class WorkerPool:
    def __init__(self, state):
        self.state = state

    def start(self):
        pass

    def stop(self):
        pass
