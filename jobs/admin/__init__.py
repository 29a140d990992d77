"""The HTTP face of the jobs: /api/v1/admin/jobs (dead letters and their replay), a blueprint the
composition root (`webapp.factory`) registers with the API's own, as it adds `jobs.cli`."""
