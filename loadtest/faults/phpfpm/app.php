<?php
// The fault suite's PHP app (loadtest/faults/phpfpm): the PHP-FPM counterpart of the sample app's /work.
//   ?id=ID            the client's request id (written to the ledger, echoed back)
//   ?respond_ms=N     time spent before the response (<= 10000)
//   ?bg_ms=N          after fastcgi_finish_request(): "work" of N ms (<= 60000), its start and end appended to
//                     the ledger (FAULTS_LEDGER, set by the pool config). PHP-FPM has no lost-task report: a
//                     start without an end is work lost without a word.
// A signal that interrupts usleep() (the child's SIGQUIT handler on reload) does not shorten the work: it
// sleeps until its deadline, like real work that does not look at signals.
function sleep_until(float $deadline): void
{
    while (($left = $deadline - microtime(true)) > 0) {
        usleep((int) ($left * 1e6));
    }
}

function ledger(string $event, string $id): void
{
    $line = sprintf("%s %s %d %.6f\n", $event, $id, getmypid(), microtime(true));
    file_put_contents(getenv('FAULTS_LEDGER'), $line, FILE_APPEND | LOCK_EX);
}

$id = preg_replace('/[^A-Za-z0-9_.-]/', '', (string) ($_GET['id'] ?? '-'));
$respond_ms = max(0, min(10000, (int) ($_GET['respond_ms'] ?? 0)));
$bg_ms = max(0, min(60000, (int) ($_GET['bg_ms'] ?? 0)));

sleep_until(microtime(true) + $respond_ms / 1000);
$body = json_encode(['id' => $id, 'pid' => getmypid(), 'method' => $_SERVER['REQUEST_METHOD'],
                     'fields' => count($_POST)]) . "\n";
header('Content-Type: application/json');
header('Content-Length: ' . strlen($body));
echo $body;

if ($bg_ms > 0) {
    fastcgi_finish_request();
    ledger('start', $id);
    sleep_until(microtime(true) + $bg_ms / 1000);
    ledger('end', $id);
}
