// Runtime calls batched into one crossing of the wasm boundary. From wasm, each header
// set or property read is its own call, with its strings copied across one by one; these
// take the whole list as one newline-separated text (`src/edge/glue.rs`).

export function headersFrom(text) {
  const headers = new Headers();
  const parts = text.split("\n");
  for (let i = 1; i < parts.length; i += 2) headers.set(parts[i - 1], parts[i]);
  return headers;
}

// Each named field of `request.cf`, a line each: "s" and the text of a string, "n" and
// the text of a number, "" when absent; null when `cf` is not an object, or a field has
// another type or a line break.
export function cfFields(request, names) {
  const cf = request.cf;
  if (cf === null || typeof cf !== "object") return null;
  const out = [];
  for (const name of names.split("\n")) {
    const v = cf[name];
    if (v === undefined || v === null) out.push("");
    else if (typeof v === "string" && !v.includes("\n")) out.push("s" + v);
    else if (typeof v === "number") out.push("n" + v);
    else return null;
  }
  return out.join("\n");
}
