// Loaded into every Node process of a test run (NODE_OPTIONS=--require): any attempt to reach a
// host that is not loopback, and any child process, is written to $BARRAGE_OFFLINE_LOG and the
// call throws, so the test fails at once instead of hanging on a network it must not use.
"use strict";
const childProcess = require("child_process");
const dns = require("dns");
const fs = require("fs");
const net = require("net");

const logFile = process.env.BARRAGE_OFFLINE_LOG;
const isLoopback = (host) =>
  host === undefined || host === null || host === "" || host === "localhost" || host === "::1" ||
  /^127\./.test(String(host));

function refuse(what) {
  if (logFile) fs.appendFileSync(logFile, `${what}\n`);
  throw new Error(`offline guard: ${what} refused (tests contact nothing outside 127.0.0.1)`);
}

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function guardedConnect(...args) {
  let options = args[0];
  if (Array.isArray(options)) options = options[0];
  if (options && typeof options === "object") {
    if (!options.path && !isLoopback(options.host)) refuse(`connect ${options.host}:${options.port}`);
  } else if (typeof args[1] === "string" && !isLoopback(args[1])) {
    refuse(`connect ${args[1]}:${options}`);
  }
  return connect.apply(this, args);
};

for (const name of ["lookup", "resolve", "resolve4", "resolve6", "resolveAny", "resolveSrv", "resolveTxt"]) {
  for (const target of [dns, dns.promises]) {
    const original = target[name];
    if (typeof original !== "function") continue;
    target[name] = function guardedLookup(host, ...rest) {
      if (!isLoopback(host)) refuse(`dns ${name} ${host}`);
      return original.call(this, host, ...rest);
    };
  }
}

// Serverless Devs starts detached daemons (update check, analytics) that would go online after
// the command has answered; none is allowed to start.
for (const name of ["spawn", "fork", "exec", "execFile"]) {
  const original = childProcess[name];
  childProcess[name] = function guardedChild(command, ...rest) {
    const argv = Array.isArray(rest[0]) ? rest[0].join(" ") : "";
    refuse(`child process ${command} ${argv}`.trim());
    return original.call(this, command, ...rest);
  };
}
