"""The ledgerd test suite: unit, simulation (tests.sim), integration and e2e tests."""
