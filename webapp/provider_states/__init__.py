"""The provider states of the Pact contract tests (docs/contracts.md): what each state sets up,
through the service functions, and the test-only hook that the verification calls. The
composition root mounts the hook only with `GATEHOUSE_ENV=test` and `PACT_PROVIDER_STATES=true`;
production refuses to start with the latter."""
