MATCH (:Scene {story_id: $story, id: $from_id})-[n:NEXT]->(:Scene {story_id: $story, id: $to_id})
DELETE n
