MATCH (s:Scene {story_id: $story, id: $scene})-[r:CONDITIONED_ON]->()
WHERE r.take = $take
DELETE r
