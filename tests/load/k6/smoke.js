// smoke: every flow at a trickle, for DURATION_S (default 15 s) — does everything work, within SLO?
import { arrivalScenarios, durationS, setupAccounts, sloThresholds, SUMMARY_TREND_STATS } from './lib.js';

export { readProfile, rotateSession, signIn, browseUsers, register } from './lib.js';

const D = durationS(15);
const RATES = { reads: 5, refreshes: 2, logins: 1, admin: 1, registrations: 1 };

export const options = {
  scenarios: arrivalScenarios(RATES, (rate) => [{ target: rate, duration: '1s' }, { target: rate, duration: `${D}s` }]),
  thresholds: sloThresholds(),
  summaryTrendStats: SUMMARY_TREND_STATS,
  setupTimeout: '120s',
};

export function setup() {
  return setupAccounts();
}
