"""interchange files → a datasets DatasetDict on disk (run with --help). The logic lives in whispersg.finetune; this is a launcher."""

from whispersg.cli.finetune import finalize_main

if __name__ == "__main__":
    raise SystemExit(finalize_main())
