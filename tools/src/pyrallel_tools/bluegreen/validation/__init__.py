"""The offline judge of a blue/green run, from the producer's and the consumers' logs to a verdict.

``load`` reads the logs into records, ``judge`` turns records into a ``ValidationReport`` (its docstring
defines every count), ``findings`` holds that report and its JSON and text forms, and ``from_logs`` runs
load and judge in one streaming pass for ``pyrallel validate`` and the scenario runner; ``switch_impact`` measures
(and does not judge) what each switch cost the records: the processing gap and the end-to-end latency.
"""
