"""What every package of the project shares, in one small home that needs neither torch nor any package of ours.

- `dataio.errors`: the errors a user can fix (`UserError` and its kinds); the command line turns each into one
  line and exit code 2.
- `dataio.atomic`: atomic file and folder writes (readers see the old or the complete new version).
- `dataio.tables`: reading the tables users hand over (txt, csv, tsv, jsonl, parquet, saved HF datasets).
- `dataio.eval_sets`: the evaluation files (STS, labeled pairs) and the 0/1 label words.
- `dataio.column_specs`: column maps from a command line (`--columns KEY=COLUMN`) and the header-only column
  check `validate` runs.
- `dataio.hashing`: sha256 of files and the counter-based hashes random choices are drawn from.
- `dataio.folder_lock`: one writer per output folder (the lock `mine` and `run` take).
- `dataio.owned_folder`: an output folder and the parents a command created, so that a failed command
  removes only what it made (`mine` and `run`).
- `dataio.os_faults`: one line for faults of the machine (a full disk, a read-only or forbidden folder).
- `dataio.triplet_layout`: the triplet contract's names, without pyarrow: band names easy to hard and the
  `round=<r>/band=<b>/part-<n>.parquet` layout (configs and the command line check names without loading pyarrow).
- `dataio.triplets`: the triplet contract: Parquet schema, the round manifest (one model, one reader, one writer),
  reading and writing rounds, and the batch type the trainer consumes.

`simcse`, `mining`, `curriculum`, `flows` and `bench` import from here; nothing here imports them (see
docs/architecture.md).
"""
