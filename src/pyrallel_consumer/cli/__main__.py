"""``python -m pyrallel_consumer.cli`` is the same as the ``pyrallel`` command."""

from pyrallel_consumer.cli.main import main

main()
