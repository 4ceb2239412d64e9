"""``python -m pyrallel_tools.cli`` is the same as the ``pyrallel`` command."""

from pyrallel_tools.cli.main import main

if __name__ == "__main__":  # worker processes of engine=process import this module without running the CLI
    main()
