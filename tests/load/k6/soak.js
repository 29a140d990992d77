// soak: the load mix for a long time (DURATION_S, default 30 min) — leaks, pool exhaustion, token
// renewal (sessions refresh before ACCESS_TOKEN_TTL), table growth. Thresholds: the SLOs.
import { arrivalScenarios, durationS, setupAccounts, sloThresholds, SUMMARY_TREND_STATS } from './lib.js';

export { readProfile, rotateSession, signIn, browseUsers, register } from './lib.js';

const D = durationS(1800);
const RATES = { reads: 60, refreshes: 10, logins: 4, admin: 8, registrations: 1 };

export const options = {
  scenarios: arrivalScenarios(RATES, (rate) => [
    { target: rate, duration: '60s' },
    { target: rate, duration: `${D}s` },
    { target: 0, duration: '15s' },
  ]),
  thresholds: sloThresholds(),
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '120s',
};

export function setup() {
  return setupAccounts();
}
