"""identity revisions: one vault identity per (study, revision)

A study re-sent after a demographic correction (patient name fixed, accession number changed,
patient merged) keeps its pseudonymous Study Instance UID but gets a new identity revision in
``vault_studies``; every instance records the revision it arrived with, every job the revision
its results are re-identified with. Existing identities, instances and jobs become revision 1
(the only identity the node kept until now). Ciphertexts are not rewritten: revision 1 keeps
the associated data it was sealed with (storage.vault).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 17:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vault_studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revision', sa.Integer(), nullable=False,
                                      server_default='1'))
    with op.batch_alter_table('vault_studies', schema=None) as batch_op:
        # The server default served only to number the existing rows.
        batch_op.alter_column('revision', server_default=None)
        batch_op.drop_constraint('pk_vault_studies', type_='primary')
        batch_op.create_primary_key('pk_vault_studies', ['pseudo_study_uid', 'revision'])
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identity_revision', sa.Integer(), nullable=False,
                                      server_default='1'))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identity_revision', sa.Integer(), nullable=True))
    op.execute("UPDATE jobs SET identity_revision = 1")


def downgrade() -> None:
    bind = op.get_bind()
    later = bind.execute(sa.text("SELECT count(*) FROM vault_studies WHERE revision > 1")).scalar()
    if later:
        raise RuntimeError("studies with corrected identities (revision > 1) cannot be "
                           "downgraded; restore the pre-upgrade backup instead")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('identity_revision')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('identity_revision')
    with op.batch_alter_table('vault_studies', schema=None) as batch_op:
        batch_op.drop_constraint('pk_vault_studies', type_='primary')
        batch_op.create_primary_key('pk_vault_studies', ['pseudo_study_uid'])
    with op.batch_alter_table('vault_studies', schema=None) as batch_op:
        batch_op.drop_column('revision')
