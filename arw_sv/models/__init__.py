"""The networks: the ECAPA-TDNN extractor (:mod:`~arw_sv.models.ecapa`) and its traceable
forward (:mod:`~arw_sv.models.traceable`), the AAM-softmax head
(:mod:`~arw_sv.models.heads`), the pairwise loss (:mod:`~arw_sv.models.pair_loss`) and
the ARW adversary with its GroupDRO counterpart (:mod:`~arw_sv.models.adversary`).
"""
