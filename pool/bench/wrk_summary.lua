-- BENCH_METHOD=POST: every request carries a small form body (the hello apps ignore it). A POST is what
-- nginx will not resend on another connection when a kept one fails under it.
local method = os.getenv("BENCH_METHOD")
if method and method ~= "" and method ~= "GET" then
  wrk.method = method
  wrk.body = "name=bench&value=1"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

-- Printed by wrk after the run: one line of JSON, so run.py does not parse wrk's human output.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_SUMMARY {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "stdev": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
