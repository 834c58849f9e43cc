"""One module per step of a symbol's chain, each the work behind one Celery task, with no Celery in it.

    train -> compare -> importance -> rollback -> select -> sizer -> outcome      (retrain, per symbol)
    analyse -> outcome                                                             (nightly, per symbol)

Every chain step takes a `brain_tasks.service.chain.ChainState` and returns one; `outcome` records
the symbol's state in its run's attempt.  `collect` and `publish` are the steps of the collection and
bar-close canvases.  `market` holds the reads the steps share, `protocol` the one way a version is
trained (find, claim, find again, same inputs, register).  Every step is idempotent on its natural
key: finished work is found and returned, not redone.
"""
