"""The blue/green test report, from the scenario runs' files to ``test-report.md`` with plots.

``load`` reads the run files through the shared model (:mod:`pyrallel_tools.bluegreen.run_record`),
``summary`` measures processing gaps and switch and rollback times per strategy, ``balance`` the work per
instance of a run, ``handover`` reads the rebalance benchmark's plain-group figures, ``plots`` draws with
matplotlib (imported only there), ``markdown`` writes the text, and ``build`` puts them together for
``pyrallel report``.
"""
