"""The label store: the only package that speaks SQL (STYLE.md, convention 2).

Submodules group the queries by record kind; `db` opens connections and runs migrations.
"""

from mdsdys.store.db import check_integrity, connect, open_db, utcnow, write_transaction

__all__ = ["check_integrity", "connect", "open_db", "utcnow", "write_transaction"]
