"""IMDA NSC parts 1/2 → interchange files (run with --help). The logic lives in whispersg.finetune; this is a launcher."""

from whispersg.cli.finetune import imda_part12_main

if __name__ == "__main__":
    raise SystemExit(imda_part12_main())
