// load: the expected busy-hour mix, sized for a 2-core machine running the API and k6 together:
// ~83 requests/s (reads 60, refreshes 10 (x2 requests), admin list 8, logins 4 (x2), registrations 1),
// a 30 s ramp, DURATION_S at the target (default 120 s), a 15 s ramp down. Thresholds: the SLOs.
import { arrivalScenarios, durationS, setupAccounts, sloThresholds, SUMMARY_TREND_STATS } from './lib.js';

export { readProfile, rotateSession, signIn, browseUsers, register } from './lib.js';

const D = durationS(120);
const RATES = { reads: 60, refreshes: 10, logins: 4, admin: 8, registrations: 1 };

export const options = {
  scenarios: arrivalScenarios(RATES, (rate) => [
    { target: rate, duration: '30s' },
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
