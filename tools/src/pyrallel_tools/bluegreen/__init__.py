"""The blue/green lab: load producer, consume app, validator, scenario runner and report, on the library's public
API and the production switch controller (``pyrallel_consumer.bluegreen``)."""
