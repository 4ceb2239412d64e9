"""The one error type of the local-Kafka tooling: the CLI prints its message, never a traceback."""


class LocalKafkaError(RuntimeError):
    """A local broker or Connect worker could not be prepared, started, or stopped."""
