"""Backup, verify, restore and prune: the database and every object, in one archive that proves it restores.

Each function is what one `studioops backup ...` command calls. They work against the embedded stack and against
any external DATABASE_URL and S3 endpoint alike. Modules: archive (the file format), create, verify, restore,
recovery (the restore journal: finish or roll back an interrupted restore), prune, catalog (finding archives),
database and objects (the two halves of the data), scratch (scratch state and leftovers of killed runs).
"""

from studioops.backup.catalog import BACKUP_BUCKET, BackupList, find_archive, list_backups
from studioops.backup.create import BackupResult, create_backup
from studioops.backup.prune import prune_backups
from studioops.backup.recovery import settle, undo
from studioops.backup.restore import RestoreResult, restore_backup
from studioops.backup.verify import VerifyResult, verify_backup

__all__ = ["BACKUP_BUCKET", "BackupList", "BackupResult", "RestoreResult", "VerifyResult", "create_backup",
           "find_archive", "list_backups", "prune_backups", "restore_backup", "settle", "undo", "verify_backup"]
