"""Training: :func:`~arw_sv.train.loop.fit` and the pieces it is made of.

The min-max game's steps (:mod:`~arw_sv.train.step`) and their weighted loss
(:mod:`~arw_sv.train.objective`), the objects built from the config
(:mod:`~arw_sv.train.build`, :mod:`~arw_sv.train.state`, :mod:`~arw_sv.train.device`),
multi-process training (:mod:`~arw_sv.train.distributed`), what a ``--resume`` may change
(:mod:`~arw_sv.train.resume`), the run folder's lock (:mod:`~arw_sv.train.lock`), and what
comes after a run: checkpoint averaging (:mod:`~arw_sv.train.average`) and training curves
(:mod:`~arw_sv.train.curves`).
"""
