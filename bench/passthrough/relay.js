// `relay-js-workerd` in `make bench`: relay-workerd's stream relay written in JavaScript.
// It POSTs the client's body to UPSTREAM_STREAM_URL, reads each chunk of the answer with a
// chain of promise callbacks and writes it, unchanged and not awaited, to an
// `IdentityTransformStream`, as src/lib.rs does from wasm. The difference between the two
// is what wasm adds to seeing every chunk; the difference from the runtime's own pipe
// (pt-workerd) is what any worker that sees every chunk pays.
export default {
  async fetch(request, env) {
    const body = await request.arrayBuffer();
    const upstream = await fetch(env.UPSTREAM_STREAM_URL, { method: "POST", headers: { "content-type": "application/json" }, body });
    const { readable, writable } = new IdentityTransformStream();
    const writer = writable.getWriter();
    const reader = upstream.body.getReader();
    const quiet = () => {};
    const next = (result) => {
      if (result.done) {
        writer.close().catch(quiet);
        return;
      }
      writer.write(result.value).catch(quiet);
      reader.read().then(next);
    };
    reader.read().then(next);
    return new Response(readable, { headers: upstream.headers });
  },
};
