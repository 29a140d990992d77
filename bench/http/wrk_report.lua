-- wrk script for bench.http: optional method, JSON body, bearer token and extra headers from the
-- script arguments, and a one-line JSON summary (throughput, percentiles, errors) for the runner.
--   wrk ... -s wrk_report.lua URL -- METHOD [BODY|-] [TOKEN|-] ["Name: value" ...]

function init(args)
   local method, body, token = args[1], args[2], args[3]
   if method and method ~= "" then
      wrk.method = method
   end
   if body and body ~= "-" and body ~= "" then
      wrk.body = body
      wrk.headers["Content-Type"] = "application/json"
   end
   if token and token ~= "-" and token ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. token
   end
   wrk.headers["Accept"] = "application/json"
   for i = 4, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      if name then
         wrk.headers[name] = value
      end
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local out = string.format(
      '{"duration_us": %d, "requests": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, ' ..
      '"p50": %d, "p90": %d, "p95": %d, "p99": %d}}',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(95),
      latency:percentile(99))
   io.write("BENCH_RESULT " .. out .. "\n")
end
