"""vault ciphertexts name their key

Every vault ciphertext gains the sealed-value header of storage.keys (format version 1, key
id), so rotated keys can coexist with old rows. Rows written before this revision were sealed
with the installation's single key, which ``dicom-node init-keys`` imports as key id 0
(``vault-0000.key``): they get key id 0. No schema change; the values are rewritten in batches.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 14:30:00
"""
import struct

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_HEADER = struct.pack(">BI", 1, 0)  # version 1, key id 0 (the pre-split key)
_BATCH = 500
_COLUMNS = {"vault_uids": ("pseudo_uid", ("original",)),
            "vault_studies": ("pseudo_study_uid", ("payload", "date_offset"))}


def _rewrite(change) -> None:  # noqa: ANN001
    bind = op.get_bind()
    for name, (key, columns) in _COLUMNS.items():
        table = sa.table(name, sa.column(key, sa.String), *(sa.column(c, sa.LargeBinary)
                                                           for c in columns))
        pk = table.c[key]
        after = ""
        while True:
            rows = bind.execute(sa.select(pk, *(table.c[c] for c in columns))
                                .where(pk > after).order_by(pk).limit(_BATCH)).all()
            if not rows:
                break
            for row in rows:
                bind.execute(sa.update(table).where(pk == row[0]).values(
                    **{c: change(bytes(v)) for c, v in zip(columns, row[1:], strict=True)}))
            after = rows[-1][0]


def upgrade() -> None:
    _rewrite(lambda v: _HEADER + v)


def downgrade() -> None:
    def strip(v: bytes) -> bytes:
        if v[:len(_HEADER)] != _HEADER:
            raise RuntimeError("vault rows sealed with a rotated key cannot be downgraded; "
                               "restore the pre-upgrade backup instead")
        return v[len(_HEADER):]
    _rewrite(strip)
