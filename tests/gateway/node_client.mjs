// Node.js through jitc's gateway: undici's EnvHttpProxyAgent reads HTTPS_PROXY (with
// its credential) and NO_PROXY; NODE_EXTRA_CA_CERTS (read at start-up) makes Node
// trust jitc's CA. (Node >= 24 does the same for the built-in fetch with
// NODE_USE_ENV_PROXY=1, which jitc sets.)
import { fetch, EnvHttpProxyAgent } from "undici";

const dispatcher = new EnvHttpProxyAgent();
const r = await fetch("https://api.test/from-node", { dispatcher });
console.log(r.status, (await r.text()).trim());
console.log("token", process.env.API_TOKEN);
