// Drives the capture server's Mailpit-compatible API with Mailpit's TypeScript client (npm
// "mailpit-api") and prints what it saw as one JSON object for tests/testing/test_mailpit.py.
// Usage: node mailpit_client.mjs BASE_URL   (three messages already sent, see the test)
import { MailpitClient } from "mailpit-api";

const mailpit = new MailpitClient(process.argv[2]);
const subjects = (result) => result.messages.map((m) => m.Subject);
const out = {};

const list = await mailpit.listMessages();
out.list = { total: list.total, count: list.count, messages_count: list.messages_count, start: list.start,
  unread: list.unread, tags: list.tags, subjects: subjects(list), first: list.messages[0] };
const page = await mailpit.listMessages(1, 1);
out.page = { start: page.start, count: page.count, total: page.total, subjects: subjects(page) };

const welcome = await mailpit.waitForMessage({ query: "subject:welcome" }, { timeout: 5000, interval: 100 });
out.welcome = { ID: welcome.ID, MessageID: welcome.MessageID, Subject: welcome.Subject, From: welcome.From,
  To: welcome.To, Cc: welcome.Cc, Bcc: welcome.Bcc, ReturnPath: welcome.ReturnPath, Text: welcome.Text,
  HTML: welcome.HTML, Attachments: welcome.Attachments, Inline: welcome.Inline, Size: welcome.Size };
out.readAfterView = (await mailpit.searchMessages({ query: "is:read" })).messages.map((m) => m.ID);
out.headers = await mailpit.getMessageHeaders(welcome.ID);
const blob = await mailpit.getMessageAttachment(welcome.ID, welcome.Attachments[0].PartID);
out.attachment = await blob.text();
out.raw = await mailpit.getMessageSource(welcome.ID);
out.text = await mailpit.renderMessageText(welcome.ID);
out.latest = (await mailpit.getMessageSummary()).Subject;

out.search = {};
for (const query of ["from:alice", "to:erin@example.test", "invoice", "-from:alice", "subject:\"welcome bob\"",
  "\"meeting notes\"", "from:alice subject:reminder", "has:attachment", "to:carol"]) {
  const found = await mailpit.searchMessages({ query });
  out.search[query] = { messages_count: found.messages_count, total: found.total, subjects: subjects(found) };
}

const invoice = (await mailpit.searchMessages({ query: "subject:invoice" })).messages[0];
await mailpit.deleteMessages({ IDs: [invoice.ID] });
out.afterDelete = subjects(await mailpit.listMessages());
out.waited = (await mailpit.waitForMessages({ query: "from:alice", count: 2, exact: true }, { timeout: 5000, interval: 100 })).messages_count;
await mailpit.deleteMessagesBySearch({ query: "subject:reminder" });
out.afterSearchDelete = subjects(await mailpit.listMessages());
await mailpit.deleteMessages();
out.afterPurge = (await mailpit.listMessages()).total;
try {
  await mailpit.getMessageSummary(welcome.ID);
  out.goneMessage = "still there";
} catch (error) {
  out.goneMessage = error.message;
}
console.log(JSON.stringify(out));
