"""The audit trail: who changed what (:mod:`.trail`), its table in the local store (:mod:`.store`) and the
route declaration (:mod:`.marks`); the HTTP side is :mod:`service.api.audit`."""
