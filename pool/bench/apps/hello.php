<?php
// The benchmark's hello world for php-fpm: same body and headers as apps/hello.py.
header('Content-Type: text/plain');
header('Content-Length: 14');
echo "Hello, World!\n";
