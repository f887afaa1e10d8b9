// Who is in view now, per camera: the server sends a snapshot on each change (server-sent events).
const now = document.getElementById("now");
const events = new EventSource("/events");
events.onmessage = (message) => {
  const cameras = JSON.parse(message.data);
  now.replaceChildren();
  const names = Object.keys(cameras);
  if (names.length === 0) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "Nobody in view.";
    now.append(p);
  }
  for (const camera of names) {
    const section = document.createElement("section");
    section.className = "card";
    const title = document.createElement("h2");
    title.textContent = camera;
    const list = document.createElement("ul");
    for (const t of cameras[camera]) {
      const item = document.createElement("li");
      const who = document.createElement(t.person_id ? "a" : "span");  // a known face links to its person
      who.textContent = t.name || "unknown " + (t.person_id || "");
      if (t.person_id) who.href = `/people/${encodeURIComponent(t.person_id)}`;
      item.append(who, ` · similarity ${t.similarity.toFixed(2)}`);
      list.append(item);
    }
    section.append(title, list);
    now.append(section);
  }
};
