// prefloop's page script: no inline script anywhere (the CSP allows none).
"use strict";
