// Pick a merge or move target by name or picture as you type: the persons matching what is typed, from
// /api/people, each with a crop; picking one puts its id in the field. Typing a name and sending works
// without this script too (the server looks the name up).
for (const input of document.querySelectorAll("input[data-pick]")) {
  const list = document.createElement("ul");
  list.className = "pick";
  list.hidden = true;
  input.form.append(list);
  let timer = 0;
  let asked = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => suggest(++asked), 120);  // one request per pause in typing, not per key
  });
  async function suggest(n) {
    const q = input.value.trim();
    if (!q) { list.hidden = true; return; }
    const url = `/api/people?q=${encodeURIComponent(q)}&not=${encodeURIComponent(input.dataset.not || "")}`;
    const people = await (await fetch(url, { credentials: "same-origin" })).json();
    if (n !== asked) return;  // a later keystroke asked again meanwhile
    list.replaceChildren(...people.map(choice));
    list.hidden = people.length === 0;
  }
  function choice(p) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    if (p.crop) {
      const img = document.createElement("img");
      img.src = p.crop; img.alt = ""; img.width = 40; img.height = 40;
      button.append(img);
    }
    const label = document.createElement("span");
    label.textContent = `${p.name || "unknown"} · ${p.person_id} · ${p.faces} face(s)`;
    button.append(label);
    button.addEventListener("click", () => { input.value = p.person_id; list.hidden = true; input.focus(); });
    item.append(button);
    return item;
  }
}
