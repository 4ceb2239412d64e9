"""A real schema registry (Apicurio Registry, Confluent-compatible API) on 127.0.0.1 for the typed-record tests:
resolved from Maven Central into the cache (``distribution``), started and stopped per run directory
(``server``)."""
