"""pyrallel-consumer-tools: the CLI, a local Kafka, the blue/green lab (load producer, consume app, validator,
scenarios, report), the benchmark and a pytest plugin. It uses the library; the library never imports it."""
