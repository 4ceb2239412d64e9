"""The process engine: a supervised pool of worker processes for CPU-bound synchronous handlers.

Why it is built this way:

* Workers are started with the ``spawn`` context: the parent runs threads (librdkafka, the log listener), and
  forking a threaded process can deadlock the child.
* Records never get pickled. Each work item is encoded once with msgpack when it is submitted (which also gives
  its size for ``max_item_bytes``) and written, in micro-batches of up to ``ipc_batch_size`` items, to the
  worker's own pipe; completions come back batched the same way. A pipe per worker tells the parent exactly
  which items each worker holds, which is what supervision needs.
* The parent side runs entirely on the event loop that called ``start()`` (``add_reader``/``add_writer`` on
  non-blocking pipe ends, process sentinels for deaths), so completions are delivered there without locks and
  the loop never blocks on a full pipe.
* Every worker publishes the item it is running and when that attempt started in a small shared-memory slot.
  The parent kills a worker whose attempt outlives ``timeout_s`` (the only way to stop pure Python CPU code),
  and when a worker dies it knows which item was running: only that item is charged an attempt, the items
  queued behind it are re-queued for free. A worker that dies between items charges the last item it started
  (or the next it would run), so a crash that repeats cannot re-queue a record for ever.
* Worker log records go through a ``QueueHandler`` in the worker, over the same pipe, to a ``QueueListener``
  in the parent that hands them to the parent's loggers: whole records, never interleaved half-lines. A pipe
  per worker is used instead of a shared ``multiprocessing.Queue`` because a worker killed while holding that
  queue's shared lock would silence every other worker.

Spawned workers import the parent's ``__main__`` module (the usual ``multiprocessing`` rule: guard the entry
point with ``if __name__ == "__main__":``) and the handler by its module and qualified name.

Modules, parent side (all on the event loop's thread): ``engine`` (the ExecutionEngine), ``ledger`` (the items
and their attempts), ``supervisor`` (spawning, respawns, dispatch, deaths, shutdown), ``worker_handle`` (one
worker's process, pipes and held items), ``timeout_watch`` and ``log_relay``. Child side: ``worker``. Both
sides: ``codec`` (the messages on the pipes), ``slot`` (the shared-memory slot) and ``handler_ref``. A worker
process imports only the modules of its side and of both sides.
"""
