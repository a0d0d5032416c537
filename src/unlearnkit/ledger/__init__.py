"""The ledger of deletion requests: the life of a model under a stream of erasure requests.

:class:`Ledger` records requests by stable sample ids, applies them in batches (one new model
version per batch, judged by the oracle-free verdict), retrains from scratch when its
:class:`RetrainPolicy` says so, and keeps everything in a hash-chained log that
:meth:`Ledger.audit` checks. SQLite by default; PostgreSQL for a team (the same code, through
SQLAlchemy). The command line is ``unlearnkit ledger``.
"""

from unlearnkit.ledger.core import FAILPOINT_ENV, ApplyResult, AuditReport, Ledger, LedgerStatus
from unlearnkit.ledger.policy import RetrainPolicy, Trigger
from unlearnkit.ledger.state import RequestRecord, VersionRecord

__all__ = [
    "FAILPOINT_ENV",
    "ApplyResult",
    "AuditReport",
    "Ledger",
    "LedgerStatus",
    "RequestRecord",
    "RetrainPolicy",
    "Trigger",
    "VersionRecord",
]
