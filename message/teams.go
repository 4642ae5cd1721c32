package message

// teams renders c as a Microsoft Teams message (what an incoming webhook or
// a Workflows "post to a channel when a webhook request is received" flow
// takes) with one Adaptive Card 1.4: the summary as a heading, the context
// line below it, the facts as a FactSet, and an Action.OpenUrl to the
// platform when there is a link.
//
//	{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","contentUrl":null,
//	  "content":{"$schema":"http://adaptivecards.io/schemas/adaptive-card.json","type":"AdaptiveCard","version":"1.4",
//	    "body":[{"type":"TextBlock","text":"...","weight":"bolder","size":"medium","wrap":true},
//	            {"type":"TextBlock","text":"PT Kahatex · ...","isSubtle":true,"spacing":"none","wrap":true},
//	            {"type":"FactSet","facts":[{"title":"Priority","value":"Critical"}]}],
//	    "actions":[{"type":"Action.OpenUrl","title":"Open in SmartMaintenance","url":"..."}]}}]}
func (r *Renderer) teams(c content) []byte {
	b := make([]byte, 0, 640+64*len(c.facts)+len(c.summary))
	b = append(b, `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","contentUrl":null,`+
		`"content":{"$schema":"http://adaptivecards.io/schemas/adaptive-card.json","type":"AdaptiveCard","version":"1.4",`+
		`"body":[{"type":"TextBlock","text":`...)
	b = appendCardText(b, c.summary)
	b = append(b, `,"weight":"bolder","size":"medium","wrap":true}`...)
	if c.context != "" {
		b = append(b, `,{"type":"TextBlock","text":`...)
		b = appendCardText(b, c.context)
		b = append(b, `,"isSubtle":true,"spacing":"none","wrap":true}`...)
	}
	if len(c.facts) > 0 {
		b = append(b, `,{"type":"FactSet","facts":[`...)
		for i, f := range c.facts {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"title":`...)
			b = appendCardText(b, f.title)
			b = append(b, `,"value":`...)
			b = appendCardText(b, f.value)
			b = append(b, '}')
		}
		b = append(b, `]}`...)
	}
	b = append(b, ']')
	if c.link != "" {
		b = append(b, `,"actions":[{"type":"Action.OpenUrl","title":`...)
		b = appendString(b, r.linkText)
		b = append(b, `,"url":`...)
		b = appendString(b, c.link)
		b = append(b, `}]`...)
	}
	return append(b, `,"msteams":{"width":"Full"}}}]}`...)
}
