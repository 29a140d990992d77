// stress: the load mix stepped up to 4x in four steps of DURATION_S/4 each (default 240 s in all),
// to find where latency bends. Thresholds: no failures (< 1 %), p99 below 2 s — the service may
// slow down under stress but must not error.
import { arrivalScenarios, degradedThresholds, durationS, setupAccounts, SUMMARY_TREND_STATS } from './lib.js';

export { readProfile, rotateSession, signIn, browseUsers, register } from './lib.js';

const STEP = Math.max(5, Math.round(durationS(240) / 4));
const RATES = { reads: 60, refreshes: 10, logins: 4, admin: 8, registrations: 1 };

export const options = {
  scenarios: arrivalScenarios(RATES, (rate) => [
    { target: rate, duration: '20s' },
    { target: rate, duration: `${STEP}s` },
    { target: rate * 2, duration: '10s' },
    { target: rate * 2, duration: `${STEP}s` },
    { target: rate * 3, duration: '10s' },
    { target: rate * 3, duration: `${STEP}s` },
    { target: rate * 4, duration: '10s' },
    { target: rate * 4, duration: `${STEP}s` },
    { target: 0, duration: '20s' },
  ]),
  thresholds: degradedThresholds(),
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '120s',
};

export function setup() {
  return setupAccounts();
}
