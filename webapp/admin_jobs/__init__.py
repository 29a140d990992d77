"""Administration of background jobs: dead letters (failed jobs) and their replay."""
