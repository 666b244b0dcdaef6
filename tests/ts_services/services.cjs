// The TypeScript SDK deployment kinvoke's tests register (tests/integration/test_typescript_sdk.py).
// Plain CommonJS, no compile step: node (22, installed by scripts/setup.sh into .kinvoke/node-sdk/)
// runs it with NODE_PATH pointing at that install. Usage: node services.cjs PORT
"use strict";
const restate = require("@restatedev/restate-sdk");

const flakyTries = new Map(); // per invocation id: how often the flaky ctx.run action ran

const greeter = restate.service({
  name: "TsGreeter",
  handlers: {
    greet: async (ctx, name) => `Hello ${name} from TypeScript`,

    // Three durable steps: each result is journaled as a Run command.
    steps: async (ctx, start) => {
      let total = start;
      for (const i of [1, 2, 3]) {
        const before = total;
        total = await ctx.run(`step-${i}`, () => before + i);
      }
      return total;
    },

    // A durable timer: the handler suspends and kinvoke wakes it up when the timer fires.
    // ctx.date.now() is journaled too, so the difference is what the handler saw across the sleep.
    nap: async (ctx, millis) => {
      const before = await ctx.date.now();
      await ctx.sleep(millis);
      const after = await ctx.date.now();
      return { millis, elapsed: after - before };
    },

    // A terminal error: no retries, the ingress answers with its code and message.
    fail: async (ctx, message) => {
      throw new restate.TerminalError(message, { errorCode: 418 });
    },

    // A ctx.run whose action throws until its `succeedOn`-th try: each failure is an attempt kinvoke
    // retries (the SDK reports it with a retry delay); returns how many tries it took.
    flakyRun: async (ctx, succeedOn) => {
      const id = ctx.request().id;
      return ctx.run("flaky", () => {
        const tries = (flakyTries.get(id) ?? 0) + 1;
        flakyTries.set(id, tries);
        if (tries < succeedOn) throw new Error(`try ${tries} of ${succeedOn} fails`);
        return tries;
      });
    },

    // Waits for an awakeable that the test resolves through the ingress.
    waitFor: async (ctx, name) => {
      const { promise } = ctx.awakeable();
      return `${name}: ${await promise}`;
    },

    // A delayed one-way send to the virtual object (the timer and the message are kinvoke's).
    addLater: async (ctx, { key, delta, millis }) => {
      ctx.objectSendClient({ name: "TsCounter" }, key).add(delta, restate.rpc.sendOpts({ delay: millis }));
      return "sent";
    },

    // TypeScript -> Python: a request-response call to a service of the Python SDK deployment.
    callPython: async (ctx, name) => {
      const answer = await ctx.serviceClient({ name: "PyBridge" }).greet(name);
      return `TypeScript got: ${answer}`;
    },
  },
});

const counter = restate.object({
  name: "TsCounter",
  handlers: {
    add: async (ctx, delta) => {
      const count = ((await ctx.get("count")) ?? 0) + delta;
      ctx.set("count", count);
      const history = (await ctx.get("history")) ?? [];
      history.push(delta);
      ctx.set("history", history);
      return count;
    },
    // Lists the state keys, then clears them all.
    reset: async (ctx) => {
      const keys = (await ctx.stateKeys()).sort();
      ctx.clearAll();
      return keys;
    },
    get: restate.handlers.object.shared(async (ctx) => (await ctx.get("count")) ?? 0),
  },
});

// A workflow: `run` once per key, waiting on a durable promise that the shared `confirm` resolves.
const signup = restate.workflow({
  name: "TsSignup",
  handlers: {
    run: async (ctx, email) => {
      ctx.set("status", "awaiting-confirmation");
      const code = await ctx.promise("confirmation").get();
      ctx.set("status", "confirmed");
      return { email, confirmedWith: code, key: ctx.key };
    },
    confirm: async (ctx, code) => {
      await ctx.promise("confirmation").resolve(code);
      return "resolved";
    },
    status: async (ctx) => (await ctx.get("status")) ?? "unknown",
  },
});

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node services.cjs PORT");
  process.exit(2);
}
restate.endpoint().bind(greeter).bind(counter).bind(signup).listen(port);
