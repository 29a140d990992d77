// spike: the load mix, then a sudden 6x burst for 30 s, then back — does the service absorb it
// and recover? DURATION_S (default 60 s) is the calm phase before and after the burst.
import { arrivalScenarios, degradedThresholds, durationS, setupAccounts, SUMMARY_TREND_STATS } from './lib.js';

export { readProfile, rotateSession, signIn, browseUsers, register } from './lib.js';

const D = durationS(60);
const RATES = { reads: 60, refreshes: 10, logins: 4, admin: 8, registrations: 1 };

export const options = {
  scenarios: arrivalScenarios(RATES, (rate) => [
    { target: rate, duration: '10s' },
    { target: rate, duration: `${D}s` },
    { target: rate * 6, duration: '5s' },
    { target: rate * 6, duration: '30s' },
    { target: rate, duration: '5s' },
    { target: rate, duration: `${D}s` },
    { target: 0, duration: '10s' },
  ]),
  thresholds: degradedThresholds(),
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '120s',
};

export function setup() {
  return setupAccounts();
}
